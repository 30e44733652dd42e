"""Training augmentations: pure numpy operations on a dict of stems, each drawing from an `np.random.Generator`.

Every stem is `(time, channels)` float32. Operations that must keep a mixture consistent act on all stems with the
same draw (polarity inversion, left/right swap, pitch shift); gains are drawn per stem. The pipeline sums the
mixture after the last operation, so it is always exactly `vocals + accompaniment`.

Pitch shift is resampling-based: the crop is read `2**(s/12)` times longer and resampled to the crop length
(soxr 'MQ', all stems in one call), which raises the pitch by `s` semitones and speeds the tempo up by the same
factor (about +-12% for +-2 semitones). It costs one resampling of the crop's channels; `tools/bench_pipeline.py`
measures it.
"""

import dataclasses
import math

import ml_collections
import numpy as np
import soxr

PITCH_QUALITY = 'MQ'
PITCH_MARGIN = 256  # input samples read beyond each end of a pitch-shifted crop (resampling filter support)

Stems = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
  """Probabilities and ranges of the augmentations (`config.data.augment`); the defaults switch all of them off."""
  remix_prob: float = 0.0
  remix_stems_prob: float = 0.0
  gain_prob: float = 0.0
  gain_db: float = 0.0
  polarity_prob: float = 0.0
  swap_prob: float = 0.0
  pitch_prob: float = 0.0
  pitch_semitones: int = 0

  @classmethod
  def from_config(cls, augment: ml_collections.ConfigDict) -> 'AugmentSettings':
    return cls(remix_prob=float(augment.remix_prob), remix_stems_prob=float(augment.remix_stems_prob),
               gain_prob=float(augment.gain_prob), gain_db=float(augment.gain_db),
               polarity_prob=float(augment.polarity_prob), swap_prob=float(augment.swap_prob),
               pitch_prob=float(augment.pitch_prob), pitch_semitones=int(augment.pitch_semitones))


def random_gains(stems: Stems, rng: np.random.Generator, prob: float, max_db: float) -> Stems:
  """Scales each stem, with probability `prob`, by its own gain drawn uniformly in [-max_db, max_db] dB."""
  apply = rng.random(len(stems)) < prob
  gains_db = rng.uniform(-max_db, max_db, len(stems))
  return {name: stem * np.float32(10.0 ** (db / 20.0)) if on else stem
          for (name, stem), on, db in zip(stems.items(), apply, gains_db, strict=True)}


def invert_polarity(stems: Stems, rng: np.random.Generator, prob: float) -> Stems:
  """Negates every stem together with probability `prob`."""
  return {name: -stem for name, stem in stems.items()} if rng.random() < prob else stems


def swap_channels(stems: Stems, rng: np.random.Generator, prob: float) -> Stems:
  """Reverses the channel order (left <-> right) of every stem together with probability `prob`."""
  return {name: stem[:, ::-1] for name, stem in stems.items()} if rng.random() < prob else stems


def draw_semitones(rng: np.random.Generator, prob: float, max_semitones: int) -> int:
  """0 with probability 1 - prob, else a shift drawn uniformly from {-n..n} minus 0."""
  if max_semitones < 1 or rng.random() >= prob:
    return 0
  shift = int(rng.integers(1, max_semitones + 1))
  return shift if rng.random() < 0.5 else -shift


def pitch_ratio(semitones: int) -> float:
  return 2.0 ** (semitones / 12.0)


def pitch_input_length(length: int, semitones: int) -> int:
  """Samples to read so that `pitch_shift(..., semitones, length)` returns `length` samples."""
  if semitones == 0:
    return length
  return math.ceil(length * pitch_ratio(semitones)) + 2 * PITCH_MARGIN + 2


def pitch_shift(stems: Stems, semitones: int, length: int) -> Stems:
  """Shifts every stem by `semitones` (resampling, so tempo changes too) and returns `length` samples of each.

  Args:
    stems: `(pitch_input_length(length, semitones), channels)` arrays.
    semitones: the shift; 0 returns the stems unchanged.
    length: output samples: output sample n is the input at `PITCH_MARGIN + n * 2**(semitones / 12)`.
  """
  if semitones == 0:
    return stems
  names = list(stems)
  widths = [stems[name].shape[1] for name in names]
  stacked = np.concatenate([stems[name] for name in names], axis=1)
  ratio = pitch_ratio(semitones)
  shifted = soxr.resample(stacked, ratio, 1.0, quality=PITCH_QUALITY)
  offset = round(PITCH_MARGIN / ratio)
  shifted = shifted[offset:offset + length]
  bounds = np.cumsum([0, *widths])
  return {name: np.ascontiguousarray(shifted[:, lo:hi])
          for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True)}


def is_silent(audio: np.ndarray, threshold_db: float) -> bool:
  """True when the RMS level of `audio` (all samples and channels) is below `threshold_db` dBFS."""
  flat = audio.reshape(-1)
  mean_square = float(np.dot(flat, flat)) / max(flat.size, 1)
  return mean_square < 10.0 ** (threshold_db / 10.0)
