"""Validation separation during training: a few held-out crops separated with the sampler every `eval_every`
steps, written to TensorBoard as audio, a spectrogram image and a uSDR scalar; the best EMA parameters so far
(by that uSDR) are kept as an exported model in `workdir/best/`.

    validator = ValidationSeparation(model, config, eval_batches[0], workdir)
    usdr = validator(step, state.ema_params, writer)     # after every validation loss
    diffvox separate song.wav --checkpoint workdir/best  # the best model, loadable like any export

The crops are the first `train.eval_audio_clips` examples of the first validation batch (fixed, so the curve is
comparable across steps); each is separated with `config.sampler`'s settings and a fixed key.
"""

import json
import os
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np

from diffvox_jax import files, inference, metrics, sampler
from diffvox_jax.models import for_sampling

BEST_DIR = 'best'
BEST_FILE = 'best.json'  # {"step": s, "usdr": x} of the parameters in best/.


def spectrogram_image(rows: list[np.ndarray], n_fft: int = 512) -> np.ndarray:
  """Log-magnitude spectrograms of mono signals `(time,)`, stacked top to bottom (low frequencies at the bottom of
  each), as a `(1, height, frames)` float32 image in [0, 1] on a shared 80 dB scale."""
  hop = n_fft // 4
  window = np.hanning(n_fft).astype(np.float32)
  images = []
  for signal in rows:
    signal = np.pad(np.asarray(signal, np.float32), (0, max(0, n_fft - len(signal))))
    frames = np.lib.stride_tricks.sliding_window_view(signal, n_fft)[::hop] * window
    images.append(20 * np.log10(np.abs(np.fft.rfft(frames, axis=-1)).T[::-1] + 1e-8))
  stacked = np.concatenate(images, axis=0)
  top = stacked.max()
  return np.clip((stacked - (top - 80.0)) / 80.0, 0.0, 1.0)[None].astype(np.float32)


class ValidationSeparation:
  """Separates fixed validation crops, logs them and keeps the best parameters.

  Args:
    model: the Flax module.
    config: the run's config (`sampler`, `data.sample_rate`, `train.eval_audio_clips`).
    batch: a validation batch with `mixture`, `vocals` `(batch, segment, channels)`.
    workdir: the run folder (`best/` goes there).
  """

  def __init__(self, model: Any, config: ml_collections.ConfigDict, batch: dict[str, np.ndarray],
               workdir: str | os.PathLike):
    clips = int(config.train.get('eval_audio_clips', 2))
    self.mixture = np.asarray(batch['mixture'][:clips], np.float32)
    self.vocals = np.asarray(batch['vocals'][:clips], np.float32)
    self.config, self.sample_rate = config, int(config.data.sample_rate)
    self.run = sampler.compiled_sampler(sampler.model_network(for_sampling(model)),
                                        sampler.SamplerSettings.from_config(config))
    self.best_dir = files.as_path(workdir) / BEST_DIR
    best_file = self.best_dir / BEST_FILE
    self.best = json.loads(best_file.read_text())['usdr'] if best_file.is_file() else -np.inf
    self.references_written = False  # mixture and true vocals go to TensorBoard once per process.

  def __call__(self, step: int, params: Any, writer: Any) -> float:
    """Separates the crops with `params`, writes their audio and spectrograms at `step` (when `writer`), keeps
    `params` in `best/` when their mean uSDR beats the best so far; returns that uSDR (the caller logs it)."""
    estimate = np.asarray(self.run(params, self.mixture, jax.random.key(step)), np.float32)
    scores = [metrics.usdr(truth, guess) for truth, guess in zip(self.vocals, estimate, strict=True)]
    usdr = float(np.mean(scores))
    if writer is not None:
      for index, (mixture, truth, guess) in enumerate(zip(self.mixture, self.vocals, estimate, strict=True)):
        writer.add_audio(f'separation_{index}/estimate', guess.mean(axis=-1), step, sample_rate=self.sample_rate)
        if not self.references_written:
          writer.add_audio(f'separation_{index}/mixture', mixture.mean(axis=-1), step, sample_rate=self.sample_rate)
          writer.add_audio(f'separation_{index}/vocals', truth.mean(axis=-1), step, sample_rate=self.sample_rate)
        image = spectrogram_image([guess.mean(axis=-1), truth.mean(axis=-1)])
        writer.add_image(f'separation_{index}/spectrogram_estimate_over_truth', image, step, dataformats='CHW')
      self.references_written = True
      writer.flush()
    if usdr > self.best and jax.process_index() == 0:
      self.best = usdr
      files.write_atomically(self.best_dir / inference.PARAMS_FILE,
                                      flax.serialization.msgpack_serialize(jax.device_get(params)))
      inference.save_config(self.best_dir, self.config)
      files.write_atomically(self.best_dir / BEST_FILE, json.dumps({'step': step, 'usdr': usdr}).encode())
    return usdr
