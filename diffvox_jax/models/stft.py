"""A linear, exactly invertible STFT for the spectral models: Hann window, zero padding of n_fft / 2 each side.

    spectrum = stft(x, n_fft, hop)         # x (batch, time, channels) -> (batch, frames, channels, bins) complex64
    x = istft(spectrum, n_fft, hop, time)  # back to (batch, time, channels) float32

`time` must be a multiple of `hop` and `n_fft` a multiple of `hop`; then frames = time / hop + 1 and bins =
n_fft / 2 + 1. `istft` is the least-squares inverse (windowed overlap-add divided by the overlap-added squared
window), so `istft(stft(x)) == x` up to float32 rounding, and `istft` of a masked spectrum is the usual masked
reconstruction. Both are linear, so a network working on `stft(x_sigma)` is still a denoiser of the waveform.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def check_geometry(n_fft: int, hop: int) -> None:
  """Raises ValueError unless n_fft is a positive multiple of hop."""
  if hop < 1 or n_fft < hop or n_fft % hop:
    raise ValueError(f'n_fft={n_fft} must be a positive multiple of hop={hop}')


@functools.lru_cache(maxsize=16)
def _window(n_fft: int) -> np.ndarray:
  """The periodic Hann window `(n_fft,)` float32."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _inverse_gain(n_fft: int, hop: int, frames: int) -> np.ndarray:
  """1 / (overlap-added squared window) over the padded signal `(hop * (frames - 1) + n_fft,)` float32."""
  total = np.zeros(hop * (frames - 1) + n_fft, np.float64)
  square = _window(n_fft).astype(np.float64) ** 2
  for frame in range(frames):
    total[frame * hop:frame * hop + n_fft] += square
  return (1.0 / np.maximum(total, 1e-8)).astype(np.float32)


def stft(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """x `(batch, time, channels)` real, time a multiple of hop -> `(batch, time / hop + 1, channels, n_fft / 2 + 1)`
  complex64."""
  check_geometry(n_fft, hop)
  batch, time, channels = x.shape
  if time % hop:
    raise ValueError(f'time length {time} is not a multiple of the STFT hop {hop}')
  padded = jnp.pad(x.astype(jnp.float32), ((0, 0), (n_fft // 2, n_fft // 2), (0, 0)))
  blocks = padded.reshape(batch, -1, hop, channels)  # (batch, time / hop + n_fft / hop, hop, channels)
  ratio, frames = n_fft // hop, time // hop + 1
  framed = jnp.concatenate([blocks[:, k:k + frames] for k in range(ratio)], axis=2)  # (batch, frames, n_fft, ch)
  framed = framed * _window(n_fft)[None, None, :, None]
  return jnp.fft.rfft(framed, axis=2).transpose(0, 1, 3, 2)


def istft(spectrum: jax.Array, n_fft: int, hop: int, time: int) -> jax.Array:
  """spectrum `(batch, frames, channels, bins)` complex -> `(batch, time, channels)` float32, the least-squares
  inverse of `stft` (frames must equal time / hop + 1)."""
  check_geometry(n_fft, hop)
  batch, frames, channels, _ = spectrum.shape
  if frames != time // hop + 1 or time % hop:
    raise ValueError(f'{frames} frames do not match time {time} with hop {hop}')
  framed = jnp.fft.irfft(spectrum, n=n_fft, axis=-1) * _window(n_fft)  # (batch, frames, channels, n_fft)
  ratio = n_fft // hop
  parts = framed.reshape(batch, frames, channels, ratio, hop)
  blocks = sum(jnp.pad(parts[:, :, :, k], ((0, 0), (k, ratio - 1 - k), (0, 0), (0, 0))) for k in range(ratio))
  signal = blocks.transpose(0, 1, 3, 2).reshape(batch, -1, channels)  # (batch, padded time, channels)
  signal = signal * _inverse_gain(n_fft, hop, frames)[None, :, None]
  return signal[:, n_fft // 2:n_fft // 2 + time]
