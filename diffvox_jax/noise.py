"""High-pass-shaped Gaussian noise for the sampler's refinement term (paper §3.2, Eq. 10).

The paper shapes the fresh noise of each stochastic DDIM step with a 4th-order Butterworth high-pass and
normalises it to unit variance. We shape in the frequency domain: rfft of white noise along time, times the
filter's magnitude |H(f)|, irfft. Decisions where the paper is silent (docs/paper.md):

- Magnitude: the digital Butterworth high-pass that `scipy.signal.butter(order, cutoff_hz, 'highpass', fs=...)`
  designs (bilinear transform with pre-warping), i.e. |H|^2 = r^(2n) / (1 + r^(2n)) with the pre-warped ratio
  r = tan(pi f / fs) / tan(pi f_c / fs). This is the power response of a causal `sosfilt` of that filter (phase
  is irrelevant for white noise), not the doubled order of a zero-phase `filtfilt`.
- Shaping is circular over the chunk (a multiplication of DFT bins), so the noise is stationary within a chunk
  and every sample has the same variance; there is no filter start-up transient.
- Normalisation is analytic: the gain is divided by sqrt(mean |H|^2) over the two-sided DFT grid, which makes
  the expected variance of every output sample exactly 1. Dividing each draw by its own empirical std would
  instead couple the samples and vary with the draw; for a 3 s chunk the two differ by well under 1%.
"""

import jax
import jax.numpy as jnp
import numpy as np


def butterworth_highpass_power(frequencies_hz: np.ndarray, sample_rate: float, cutoff_hz: float,
                               order: int) -> np.ndarray:
  """|H(f)|^2 of the digital Butterworth high-pass (scipy's `butter` design), float64, same shape as the input.

  Args:
    frequencies_hz: frequencies in [0, sample_rate / 2].
    sample_rate: sampling rate in Hz.
    cutoff_hz: -3 dB cut-off in (0, sample_rate / 2).
    order: filter order n.
  """
  if not 0.0 < cutoff_hz < sample_rate / 2:
    raise ValueError(f'cutoff_hz={cutoff_hz} must lie in (0, {sample_rate / 2}) for a high-pass')
  half_angle = np.pi * np.clip(np.asarray(frequencies_hz, np.float64), 0.0, sample_rate / 2) / sample_rate
  with np.errstate(divide='ignore'):
    # tan(pi/2) is huge but finite in float64, so the Nyquist bin gets a ratio of ~1e16 and a power of 1.
    log_ratio = np.log(np.tan(half_angle)) - np.log(np.tan(np.pi * cutoff_hz / sample_rate))
  # r^(2n) / (1 + r^(2n)) = sigmoid(2n log r), written stably (0 at DC where log r = -inf).
  return 0.5 * (1.0 + np.tanh(order * log_ratio))


def shaping_gain(length: int, sample_rate: float, cutoff_hz: float, order: int) -> np.ndarray:
  """Per-rfft-bin gain that turns unit white noise of `length` samples into unit-variance high-passed noise.

  Returns:
    float64 array `(length // 2 + 1,)`: |H(f_k)| / sqrt(mean over the two-sided DFT grid of |H|^2).
  """
  power = butterworth_highpass_power(np.fft.rfftfreq(length, 1.0 / sample_rate), sample_rate, cutoff_hz, order)
  # Each interior rfft bin stands for two bins of the full DFT; DC and (for even lengths) Nyquist for one.
  multiplicity = np.full(power.shape, 2.0)
  multiplicity[0] = 1.0
  if length % 2 == 0:
    multiplicity[-1] = 1.0
  mean_power = np.sum(multiplicity * power) / length
  return np.sqrt(power / mean_power)


def shaped_normal(rng: jax.Array, shape: tuple[int, int], gain: np.ndarray | None) -> jax.Array:
  """Unit-variance Gaussian noise of `shape = (time, channels)`, shaped along time by `gain`.

  Args:
    rng: a PRNG key.
    shape: `(time, channels)`.
    gain: `shaping_gain(time, ...)`, or None for white noise.

  Returns:
    float32 array `(time, channels)`.
  """
  white = jax.random.normal(rng, shape, jnp.float32)
  if gain is None:
    return white
  spectrum = jnp.fft.rfft(white, axis=0) * jnp.asarray(gain, jnp.float32)[:, None]
  return jnp.fft.irfft(spectrum, n=shape[0], axis=0).astype(jnp.float32)
