"""Separation metrics: utterance-level SDR (the paper's statistic) and BSS Eval v4 through museval.

- `usdr`: the Sound Demixing Challenge 2023 "global SDR" of one whole track, in float64:
  10 log10((sum ref^2 + 1e-7) / (sum (ref - est)^2 + 1e-7)), summed over all samples and channels.
  `usdr_jax` is the same formula batched in JAX, for validation during training.
- `bss_eval`: a thin wrapper over `museval.metrics.bss_eval` (BSS Eval v4; with `sources_version=True` and
  `window=None` it is BSS Eval v3's `bss_eval_sources`, validated against the original MATLAB toolbox in tests).
- `vocal_scores`: the museval protocol for a vocal estimate: references [vocals, accompaniment] against estimates
  [vocals_est, mixture - vocals_est] over 1 s frames (`museval.evaluate`, mode v4), in museval's JSON layout.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import museval
import numpy as np

USDR_DELTA = 1e-7  # the SDX23 code's guard against log(0) and division by zero.
BSS_METRICS = ('SDR', 'SIR', 'SAR', 'ISR')
MUSEVAL_ORDER = ('SDR', 'ISR', 'SIR', 'SAR')  # what `museval.evaluate` returns.


def usdr(reference: np.ndarray, estimate: np.ndarray) -> float:
  """Utterance-level SDR (dB) of one track, exactly as the Sound Demixing Challenge 2023 evaluation.

  Args:
    reference: `(time, channels)` (or `(time,)`) true source.
    estimate: same shape as `reference`.
  Returns:
    the SDR in dB; identical signals give 10 log10((E + 1e-7) / 1e-7), silent ones 0 dB.
  """
  reference = np.asarray(reference, np.float64)
  estimate = np.asarray(estimate, np.float64)
  if reference.shape != estimate.shape:
    raise ValueError(f'usdr: reference shape {reference.shape} differs from estimate shape {estimate.shape}')
  numerator = np.sum(np.square(reference)) + USDR_DELTA
  denominator = np.sum(np.square(reference - estimate)) + USDR_DELTA
  return float(10.0 * np.log10(numerator / denominator))


def usdr_jax(reference: jax.Array, estimate: jax.Array) -> jax.Array:
  """Batched utterance-level SDR (dB): `(batch, time, channels)` pairs -> `(batch,)` (jit-friendly)."""
  axes = tuple(range(1, reference.ndim))
  numerator = jnp.sum(jnp.square(reference), axis=axes) + USDR_DELTA
  denominator = jnp.sum(jnp.square(reference - estimate), axis=axes) + USDR_DELTA
  return 10.0 * jnp.log10(numerator / denominator)


class BssEvalScores(NamedTuple):
  """BSS Eval results, each `(sources, frames)` in dB (NaN where museval skips a silent frame)."""

  sdr: np.ndarray
  isr: np.ndarray
  sir: np.ndarray
  sar: np.ndarray
  permutation: np.ndarray  # `(sources, 1)`: estimate index matched to each reference.


def bss_eval(references: np.ndarray, estimates: np.ndarray, *, window: int | None = None, hop: int | None = None,
             sources_version: bool = False, compute_permutation: bool = False) -> BssEvalScores:
  """BSS Eval through `museval.metrics.bss_eval` (time-invariant distortion filters of 512 taps).

  Args:
    references: `(sources, time, channels)` (or `(sources, time)`) true sources.
    estimates: same shape as `references`.
    window: frame length in samples; None scores the whole signal as one frame.
    hop: frame hop in samples (defaults to `window`).
    sources_version: True gives v3's `bss_eval_sources` criteria (no ISR; the MATLAB toolbox's numbers), False
      the image criteria of v4 that museval and SiSEC use.
    compute_permutation: search every assignment of estimates to references (best mean SIR).
  """
  window = np.inf if window is None else int(window)
  hop = window if hop is None else int(hop)
  sdr, isr, sir, sar, permutation = museval.metrics.bss_eval(
      np.asarray(references, np.float64), np.asarray(estimates, np.float64), window=window, hop=hop,
      compute_permutation=compute_permutation, bsseval_sources_version=sources_version)
  return BssEvalScores(sdr, isr, sir, sar, permutation)


def finite_or_none(value: float) -> float | None:
  """A float, or None for NaN and infinities (JSON has neither)."""
  return float(value) if np.isfinite(value) else None


def frame_median(frames: Sequence[dict], metric: str) -> float:
  """Median of one metric over museval frames, ignoring NaN frames (museval's `np.nanmedian`); NaN if none."""
  values = np.array([np.nan if f['metrics'][metric] is None else f['metrics'][metric] for f in frames], np.float64)
  if not np.any(np.isfinite(values)):
    return float('nan')
  return float(np.nanmedian(values))


def _frames(scores: tuple[np.ndarray, ...], index: int, window_s: float) -> list[dict]:
  """museval's per-frame layout for source `index` of `museval.evaluate`'s `(SDR, ISR, SIR, SAR)`, each
  `(sources, frames)`; NaN or infinite values become None (valid JSON)."""
  named = dict(zip(MUSEVAL_ORDER, scores, strict=True))
  return [{'time': t * window_s, 'duration': window_s,
           'metrics': {name: finite_or_none(named[name][index, t]) for name in BSS_METRICS}}
          for t in range(named['SDR'].shape[1])]


def _silent(signal: np.ndarray) -> bool:
  """museval's test for a silent source: the channel sum is zero at every sample."""
  return bool(np.all(np.sum(signal, axis=-1) == 0))


def vocal_scores(vocals: np.ndarray, vocals_estimate: np.ndarray, mixture: np.ndarray, sample_rate: int,
                 window_s: float = 1.0) -> dict:
  """BSS Eval v4 of a vocal estimate as museval scores the MUSDB vocals/accompaniment task.

  The accompaniment estimate is `mixture - vocals_estimate`. When that is silent (the mixture itself as the
  estimate) the accompaniment cannot be scored; its frames are None, and the vocals are scored with the true
  accompaniment standing in as the second estimate. That is exact: without a permutation search BSS Eval scores
  each estimate only against the references (see `tests/test_metrics.py`). A silent vocal estimate has no
  defined scores (all frames None).

  Args:
    vocals: `(time, channels)` true vocals.
    vocals_estimate: `(time, channels)` estimate, the same shape as `vocals`.
    mixture: `(time, channels)` mixture; the true accompaniment is `mixture - vocals`.
    sample_rate: Hz; frames are `window_s` long with hop `window_s` (museval's 1 s default).
    window_s: frame length in seconds.
  Returns:
    `{'targets': [{'name': 'vocals', 'frames': [...]}, {'name': 'accompaniment', 'frames': [...]}]}`, museval's
    layout (frames `{'time', 'duration', 'metrics': {'SDR', 'SIR', 'SAR', 'ISR'}}`), or no targets when the
    reference vocals are silent (BSS Eval is undefined then).
  """
  vocals, mixture = np.asarray(vocals, np.float64), np.asarray(mixture, np.float64)
  vocals_estimate = np.asarray(vocals_estimate, np.float64)
  if not vocals.shape == vocals_estimate.shape == mixture.shape:
    raise ValueError(f'vocal_scores: vocals {vocals.shape}, estimate {vocals_estimate.shape} and mixture '
                     f'{mixture.shape} must have the same shape')
  if _silent(vocals):
    return {'targets': []}
  window = int(round(window_s * sample_rate))
  undefined = [{'time': t * window_s, 'duration': window_s, 'metrics': dict.fromkeys(BSS_METRICS)}
               for t in range(museval.metrics.Framing(window, window, len(vocals)).nwin)]
  accompaniment, accompaniment_estimate = mixture - vocals, mixture - vocals_estimate
  if _silent(vocals_estimate):
    vocal_frames, accompaniment_frames = undefined, undefined
  elif _silent(accompaniment):  # no accompaniment at all: the vocals alone (a silent reference is ambiguous).
    scores = museval.evaluate([vocals], [vocals_estimate], win=window, hop=window)
    vocal_frames, accompaniment_frames = _frames(scores, 0, window_s), undefined
  else:
    score_accompaniment = not _silent(accompaniment_estimate)
    second_estimate = accompaniment_estimate if score_accompaniment else accompaniment
    scores = museval.evaluate([vocals, accompaniment], [vocals_estimate, second_estimate], win=window, hop=window)
    vocal_frames = _frames(scores, 0, window_s)
    accompaniment_frames = _frames(scores, 1, window_s) if score_accompaniment else undefined
  return {'targets': [{'name': 'vocals', 'frames': vocal_frames},
                      {'name': 'accompaniment', 'frames': accompaniment_frames}]}
