"""Figures for the demo and for reports: spectrogram comparisons and training curves (matplotlib, Agg backend).

    scalars = read_metrics('runs/tiny/metrics.jsonl')        # {'train/loss': [(step, value), ...], ...}
    plot_training_curves(scalars, 'loss.png')
    plot_spectrograms([('mixture', mix), ('estimate', est), ('true vocals', voc)], 22050, 'spectrograms.png')

The training loop writes its scalars as JSON lines beside its config (`metrics.jsonl`, as well as TensorBoard
event files); `read_metrics` reads them. Every figure is written atomically.
"""

import io
import os
import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use('Agg')

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402

from diffvox_jax import files  # noqa: E402

SPECTROGRAM_N_FFT = 1024
SPECTROGRAM_HOP = 256
DYNAMIC_RANGE_DB = 80.0
# (tag, legend) of the total-loss panel and of the loss-terms panel of `plot_training_curves`.
LOSS_CURVES = (('train/loss', 'train'), ('eval/loss', 'validation'), ('eval_ema/loss', 'validation (EMA)'))
TERM_CURVES = (('train/v_mse', 'L_diff (v MSE)'), ('train/latent_mse', 'L_lat'),
               ('train/reconstruction_mse', 'L_rec'))

Scalars = dict[str, list[tuple[int, float]]]


def read_metrics(path: str | os.PathLike) -> Scalars:
  """Every scalar of a training run's `metrics.jsonl` (`train.loop.METRICS_FILE`): tag -> [(step, value)] sorted
  by step (empty before the run logged anything). When a resumed run logs a step again the later value wins."""
  by_tag: dict[str, dict[int, float]] = {}
  for record in files.read_json_lines(path) if pathlib.Path(path).is_file() else []:
    step = int(record['step'])
    for tag, value in record.items():
      if tag != 'step':
        by_tag.setdefault(tag, {})[step] = float(value)
  return {tag: sorted(points.items()) for tag, points in by_tag.items()}


def save_figure(figure: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> pathlib.Path:
  """Renders `figure` as PNG, writes it atomically to `path` and closes it."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=dpi, bbox_inches='tight')
  plt.close(figure)
  path = pathlib.Path(path)
  files.write_atomically(path, buffer.getvalue())
  return path


def _plot_curves(axis: plt.Axes, scalars: Scalars, curves: Sequence[tuple[str, str]], title: str) -> bool:
  """Draws the curves of `scalars` named in `curves` on `axis`; returns whether any was present."""
  drawn = False
  for tag, label in curves:
    if scalars.get(tag):
      steps, values = zip(*scalars[tag], strict=True)
      axis.plot(steps, values, marker='o' if len(steps) < 20 else None, markersize=3, label=label)
      drawn = True
  axis.set_title(title)
  axis.set_xlabel('optimizer step')
  axis.grid(True, alpha=0.3)
  if drawn:
    axis.set_yscale('log')
    axis.legend()
  return drawn


def plot_training_curves(scalars: Scalars, path: str | os.PathLike, title: str = 'Training') -> pathlib.Path:
  """Two panels: the total loss (train, validation, validation of the EMA weights) and the train loss terms.

  Args:
    scalars: from `read_metrics` (`train/loss`, `train/v_mse`, ..., `eval/loss`, `eval_ema/loss`).
    path: the PNG to write.
    title: the figure's title.

  Raises:
    ValueError: `scalars` holds no `train/loss` point.
  """
  if not scalars.get('train/loss'):
    raise ValueError(f'no train/loss scalars to plot (tags: {sorted(scalars) or "none"})')
  figure, (total_axis, terms_axis) = plt.subplots(1, 2, figsize=(11, 4))
  _plot_curves(total_axis, scalars, LOSS_CURVES, 'loss (L_diff + L_lat + L_rec)')
  _plot_curves(terms_axis, scalars, TERM_CURVES, 'train loss terms')
  figure.suptitle(title)
  return save_figure(figure, path)


def spectrogram_db(audio: np.ndarray, sample_rate: int, n_fft: int = SPECTROGRAM_N_FFT,
                   hop: int = SPECTROGRAM_HOP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Power spectrogram in dB of the channel mean.

  Args:
    audio: `(time, channels)` (or `(time,)`) samples.
    sample_rate: Hz.
    n_fft: Hann window length in samples.
    hop: hop in samples.

  Returns:
    `(freqs_hz (freqs,), times_s (frames,), power_db (freqs, frames))`, 10 log10 of the power (floored at 1e-12).
  """
  audio = np.asarray(audio, np.float64)
  mono = audio.mean(axis=1) if audio.ndim == 2 else audio
  freqs, times, spectrum = signal.stft(mono, fs=sample_rate, window='hann', nperseg=n_fft, noverlap=n_fft - hop)
  return freqs, times, 10.0 * np.log10(np.maximum(np.abs(spectrum) ** 2, 1e-12))


def plot_spectrograms(panels: Sequence[tuple[str, np.ndarray]], sample_rate: int, path: str | os.PathLike,
                      title: str = '', dynamic_range_db: float = DYNAMIC_RANGE_DB) -> pathlib.Path:
  """Stacked spectrograms on one colour scale (the loudest panel's peak down `dynamic_range_db`).

  Args:
    panels: `(label, audio (time, channels))` pairs, drawn top to bottom (e.g. mixture, estimate, true vocals).
    sample_rate: Hz, of every panel.
    path: the PNG to write.
    title: the figure's title.
    dynamic_range_db: dB below the peak shown before the colour map saturates.
  """
  if not panels:
    raise ValueError('plot_spectrograms needs at least one panel')
  spectrograms = [(label, *spectrogram_db(audio, sample_rate)) for label, audio in panels]
  peak = max(float(power.max()) for *_, power in spectrograms)
  figure, axes = plt.subplots(len(panels), 1, figsize=(11, 2.6 * len(panels)), sharex=True, squeeze=False)
  image = None
  for axis, (label, freqs, times, power) in zip(axes[:, 0], spectrograms, strict=True):
    image = axis.pcolormesh(times, freqs / 1000.0, power, shading='auto', cmap='magma',
                            vmin=peak - dynamic_range_db, vmax=peak)
    axis.set_ylabel('kHz')
    axis.set_title(label, loc='left')
  axes[-1, 0].set_xlabel('time (s)')
  figure.colorbar(image, ax=axes[:, 0].tolist(), label='power (dB)')
  if title:
    figure.suptitle(title)
  return save_figure(figure, path)
