"""The grain input pipeline: augmented random crops for training, fixed crops for validation, whole tracks for eval.

    iterator = train_iterator(config, process_index=jax.process_index(), process_count=jax.process_count())
    batch = next(iterator)             # {'mixture', 'vocals', 'accompaniment'}: (per_host_batch, segment, channels)
    state = iterator.get_state()       # save with the checkpoint; later: iterator.set_state(state)

Every example is a pure function of (seed, source, example index): grain's `random_map` seeds a generator from
them, so batches are identical for a seed whatever the thread or process count, and the iterator state is just the
position. One example (`CropSampler`):
1. pitch: with `augment.pitch_prob` a shift of +-1..`pitch_semitones` semitones (the crop is read longer for it);
2. a crop of the vocals at a position drawn uniformly over the source's audio (tracks weighted by length); a crop
   whose vocal RMS is below `silence_threshold_db` dBFS is kept with probability `silent_keep_prob` and otherwise
   redrawn (up to `MAX_CROP_ATTEMPTS` times, then the last draw is kept), so batches stay full and the silent
   share is what dropping 95% of silent crops would leave;
3. the accompaniment of the same span, or with `remix_prob` from other tracks: the accompaniment of one random
   track, or (with `remix_stems_prob`, where the source stores individual stems) each stem of a random template
   track taken from its own random track;
4. a random gain per stem, then pitch shift, polarity inversion and left/right swap of vocals and accompaniment
   together (`augment.py`);
5. mixture = vocals + accompaniment, the float32 sum computed last.
Sources in `data.sources` (`'musdb18hq:1.0,synthetic:0.5'`) are interleaved by weight (`grain.MapDataset.mix`).
Hosts take disjoint slices of the example sequence (`process_index::process_count`), so the global batch of
`process_count` hosts holds the same examples as a single host's batch, but in another order (host i's examples
form the i-th block of rows, where one host interleaves them): an example lands on another row, draws the sigma and
noise of that row's key, and a multi-host run is not bit-identical to a single-host one.
"""

import dataclasses
import pathlib
import sys
from collections.abc import Iterator
from typing import NamedTuple

import grain
import ml_collections
import numpy as np

from diffvox_jax.data import augment, builders
from diffvox_jax.data.records import ACCOMPANIMENT, MIXTURE, VOCALS
from diffvox_jax.data.store import PreparedDataset

MAX_CROP_ATTEMPTS = 100
EVAL_SEED = 20250101  # validation crops are the same whatever the training seed


class Track(NamedTuple):
  """A whole unaugmented track: `mixture` and `vocals` are `(time, channels)` float32."""
  name: str
  mixture: np.ndarray
  vocals: np.ndarray
  sample_rate: int


@dataclasses.dataclass(frozen=True)
class CropSettings:
  """What one example is: crop length, silence handling and augmentations."""
  segment: int
  silence_threshold_db: float
  silent_keep_prob: float
  augment: augment.AugmentSettings
  max_attempts: int = MAX_CROP_ATTEMPTS


def crop_settings(config: ml_collections.ConfigDict, augmented: bool) -> CropSettings:
  data = config.data
  settings = augment.AugmentSettings.from_config(data.augment) if augmented else augment.AugmentSettings()
  return CropSettings(int(data.segment), float(data.silence_threshold_db), float(data.silent_keep_prob), settings)


def parse_sources(text: str) -> list[tuple[str, float]]:
  """`'musdb18hq:1.0,synthetic:0.5'` -> [('musdb18hq', 1.0), ('synthetic', 0.5)]; a missing weight is 1."""
  sources = []
  for item in text.split(','):
    name, _, weight = item.strip().partition(':')
    try:
      value = float(weight) if weight else 1.0
    except ValueError:
      raise ValueError(f'data.sources: weight {weight!r} of {name!r} is not a number') from None
    if name not in builders.BUILDERS or value <= 0:
      raise ValueError(f'data.sources: {item.strip()!r} needs a known dataset ({", ".join(builders.BUILDERS)}) '
                       f'and a positive weight')
    sources.append((name, value))
  return sources


class _TrackDraw:
  """Draws a track among `indices` with probability proportional to its length, and a start within it."""

  def __init__(self, indices: np.ndarray, lengths: np.ndarray):
    self.indices, self.lengths = indices, lengths
    cumulative = np.cumsum(lengths, dtype=np.float64)
    self._cdf = cumulative / cumulative[-1]

  def _position(self, rng: np.random.Generator) -> int:
    return int(min(np.searchsorted(self._cdf, rng.random(), side='right'), len(self.indices) - 1))

  def track(self, rng: np.random.Generator) -> int:
    """A track index of the dataset."""
    return int(self.indices[self._position(rng)])

  def span(self, rng: np.random.Generator, length: int) -> tuple[int, int]:
    """(track, start) of a `length`-sample span; a track shorter than that starts at 0 (zero-padded)."""
    position = self._position(rng)
    start = int(rng.integers(0, max(int(self.lengths[position]) - length, 0) + 1))
    return int(self.indices[position]), start


class CropSampler:
  """grain `random_map` transform: (example index, generator) -> one training example (see the module doc)."""

  def __init__(self, dataset: PreparedDataset, settings: CropSettings):
    self._dataset, self._settings = dataset, settings
    lengths = np.array([t.length for t in dataset.tracks], np.int64)
    if not len(lengths) or not lengths.sum():
      raise ValueError(f'{dataset.name}: no audio to crop from')
    self._all = _TrackDraw(np.arange(len(lengths)), lengths)
    with_stems = np.array([i for i, t in enumerate(dataset.tracks) if t.stems], np.int64)
    self._templates = _TrackDraw(with_stems, lengths[with_stems]) if len(with_stems) else None
    stem_names = sorted({s for t in dataset.tracks for s in t.stems})
    self._holders = {}
    for stem in stem_names:
      holders = np.array([i for i, t in enumerate(dataset.tracks) if stem in t.stems], np.int64)
      self._holders[stem] = _TrackDraw(holders, lengths[holders])

  def __call__(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    del element  # the example is a function of the generator, which grain seeds from the index
    settings, options = self._settings, self._settings.augment
    semitones = augment.draw_semitones(rng, options.pitch_prob, options.pitch_semitones)
    length = augment.pitch_input_length(settings.segment, semitones)
    track, start, vocals = self._vocal_crop(rng, length)
    stems = {VOCALS: vocals, **self._accompaniment_parts(rng, track, start, length)}
    stems = augment.random_gains(stems, rng, options.gain_prob, options.gain_db)
    vocals = stems.pop(VOCALS)
    pair = {VOCALS: vocals, ACCOMPANIMENT: _total(list(stems.values()))}
    pair = augment.pitch_shift(pair, semitones, settings.segment)
    pair = augment.invert_polarity(pair, rng, options.polarity_prob)
    pair = augment.swap_channels(pair, rng, options.swap_prob)
    vocals, accompaniment = pair[VOCALS], pair[ACCOMPANIMENT]  # maybe channel-reversed views: batching copies
    return {'mixture': vocals + accompaniment, 'vocals': vocals, 'accompaniment': accompaniment}

  def _vocal_crop(self, rng: np.random.Generator, length: int) -> tuple[int, int, np.ndarray]:
    settings = self._settings
    for _ in range(settings.max_attempts):
      track, start = self._all.span(rng, length)
      vocals = self._dataset.read(track, VOCALS, start, length)
      if not augment.is_silent(vocals, settings.silence_threshold_db) or rng.random() < settings.silent_keep_prob:
        break
    return track, start, vocals

  def _accompaniment_parts(self, rng: np.random.Generator, track: int, start: int,
                           length: int) -> dict[str, np.ndarray]:
    read, options = self._dataset.read, self._settings.augment
    if rng.random() >= options.remix_prob:
      return {ACCOMPANIMENT: read(track, ACCOMPANIMENT, start, length)}
    if self._templates is not None and rng.random() < options.remix_stems_prob:
      template = self._dataset.tracks[self._templates.track(rng)]
      parts = {}
      for stem in template.stems:
        donor, donor_start = self._holders[stem].span(rng, length)
        parts[stem] = read(donor, stem, donor_start, length)
      return parts
    donor, donor_start = self._all.span(rng, length)
    return {ACCOMPANIMENT: read(donor, ACCOMPANIMENT, donor_start, length)}


def _total(arrays: list[np.ndarray]) -> np.ndarray:
  """The sum of freshly read arrays (the first one is summed into)."""
  total = arrays[0]
  for array in arrays[1:]:
    total += array
  return total


def _source_seed(seed: int, source_index: int) -> int:
  return int(np.random.SeedSequence([seed, source_index]).generate_state(1)[0])


def crop_dataset(config: ml_collections.ConfigDict, split: str, seed: int, augmented: bool) -> grain.MapDataset:
  """The infinite example sequence of `data.sources` (mixed by weight) from `split`; example i is deterministic."""
  data = config.data
  data_dir = pathlib.Path(data.data_dir).expanduser()
  settings = crop_settings(config, augmented)
  datasets, weights = [], []
  for index, (name, weight) in enumerate(parse_sources(data.sources)):
    source = PreparedDataset(name, split, data_dir, data.sample_rate, data.channels)
    examples = grain.MapDataset.range(sys.maxsize).random_map(CropSampler(source, settings),
                                                              seed=_source_seed(seed, index))
    datasets.append(examples)
    weights.append(weight)
  return datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)


def per_host_batch(config: ml_collections.ConfigDict, process_count: int) -> int:
  batch_size = config.train.batch_size
  if process_count < 1 or batch_size % process_count:
    raise ValueError(f'train.batch_size={batch_size} is not divisible by the process count {process_count}')
  return batch_size // process_count


def host_batches(examples: grain.MapDataset, batch: int, process_index: int, process_count: int) -> grain.MapDataset:
  """This host's slice of the example sequence, in batches of `batch`: `(batch, segment, channels)` per key."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in [0, {process_count})')
  return examples[process_index::process_count].batch(batch, drop_remainder=True)


def train_iterator(config: ml_collections.ConfigDict, *, process_index: int = 0, process_count: int = 1,
                   seed: int | None = None) -> grain.DatasetIterator:
  """The training batches of this host, forever; the iterator has `get_state()` / `set_state(state)`.

  Args:
    config: the full config (`data.*`, `train.batch_size`, `seed`).
    process_index: this host (`jax.process_index()`).
    process_count: hosts (`jax.process_count()`); each gets `train.batch_size // process_count` examples.
    seed: overrides `config.seed`.

  Returns:
    An iterator of `{'mixture', 'vocals', 'accompaniment'}` float32 `(per_host_batch, segment, channels)`.
  """
  seed = config.seed if seed is None else seed
  examples = crop_dataset(config, config.data.train_split, seed, augmented=True)
  batches = host_batches(examples, per_host_batch(config, process_count), process_index, process_count)
  stream = batches.to_iter_dataset(grain.ReadOptions(num_threads=config.data.read_threads,
                                                     prefetch_buffer_size=config.data.prefetch))
  if config.data.worker_count > 0:
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.worker_count))
  return iter(stream)


def eval_batches(config: ml_collections.ConfigDict, *, num_batches: int, process_index: int = 0,
                 process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """`num_batches` fixed validation batches from `data.eval_split`: random crops, no augmentation.

  The same for every call and training seed (seeded with `EVAL_SEED`); silent crops are dropped as in training.
  """
  examples = crop_dataset(config, config.data.eval_split, EVAL_SEED, augmented=False)
  batches = host_batches(examples, per_host_batch(config, process_count), process_index, process_count)
  return [batches[i] for i in range(num_batches)]


def tracks(config: ml_collections.ConfigDict, dataset: str, split: str,
           data_dir: str | pathlib.Path | None = None) -> Iterator[Track]:
  """The whole tracks of a prepared dataset split, unaugmented, at the config's rate and channel count.

  The mixture is the source's own mixture where it has one (MUSDB18, MUSDB18-HQ, stems folders with a mixture
  file), else vocals + accompaniment.
  """
  store = PreparedDataset(dataset, split, config.data.data_dir if data_dir is None else data_dir,
                          config.data.sample_rate, config.data.channels)
  for index, entry in enumerate(store.tracks):
    vocals = store.read_track(index, VOCALS)
    if MIXTURE in entry.streams:
      mixture = store.read_track(index, MIXTURE)
    else:
      mixture = vocals + store.read_track(index, ACCOMPANIMENT)
    yield Track(entry.name, mixture, vocals, store.sample_rate)
