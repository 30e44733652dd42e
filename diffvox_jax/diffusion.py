"""The v-objective of Diff-DMX (paper §2, Eqs. 1 to 3 and 5 to 6) as pure functions.

sigma in [0, 1] is the noise level; phi = pi * sigma / 2, alpha = cos(phi), beta = sin(phi). All functions
broadcast a per-example `sigma` of shape `(batch,)` against signals of shape `(batch, time, channels)`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffvox_jax import metrics

RECONSTRUCTION_LOSSES = ('mse', 'sdr')
SDR_LOSS_FLOOR_DB = 30.0  # the 'sdr' loss floors both energies this far below the crop's mixture energy.


def alpha_beta(sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Signal and noise scales (alpha, beta) = (cos, sin)(pi * sigma / 2); same shape as `sigma`."""
  phi = sigma * (jnp.pi / 2)
  return jnp.cos(phi), jnp.sin(phi)


def _per_example(scale: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes `(batch,)` scales to broadcast against `like` of shape `(batch, ...)`."""
  scale = jnp.asarray(scale, like.dtype)
  return scale.reshape(scale.shape + (1,) * (like.ndim - scale.ndim))


def add_noise(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> jax.Array:
  """Eq. 1: x_sigma = alpha * x0 + beta * noise. x0, noise: (batch, time, channels); sigma: (batch,)."""
  alpha, beta = alpha_beta(sigma)
  return _per_example(alpha, x0) * x0 + _per_example(beta, x0) * noise


def v_target(x0: jax.Array, noise: jax.Array, sigma: jax.Array) -> jax.Array:
  """Eq. 2 (with the paper's typo fixed): v = alpha * noise - beta * x0."""
  alpha, beta = alpha_beta(sigma)
  return _per_example(alpha, x0) * noise - _per_example(beta, x0) * x0


def x0_from_v(x_sigma: jax.Array, v: jax.Array, sigma: jax.Array) -> jax.Array:
  """Eq. 5: x0_hat = alpha * x_sigma - beta * v."""
  alpha, beta = alpha_beta(sigma)
  return _per_example(alpha, x_sigma) * x_sigma - _per_example(beta, x_sigma) * v


def noise_from_v(x_sigma: jax.Array, v: jax.Array, sigma: jax.Array) -> jax.Array:
  """Eq. 6: eps_hat = beta * x_sigma + alpha * v."""
  alpha, beta = alpha_beta(sigma)
  return _per_example(beta, x_sigma) * x_sigma + _per_example(alpha, x_sigma) * v


class LossTerms(NamedTuple):
  """The three scalar loss terms and their weighted sum."""

  total: jax.Array
  v_mse: jax.Array  # L_diff, Eq. 3.
  latent_mse: jax.Array  # L_lat, Eq. 11.
  reconstruction_mse: jax.Array  # L_rec, Eq. 12 (the squared error, whichever `reconstruction_loss` trains).


def squared_error_per_sample(target: jax.Array, estimate: jax.Array) -> jax.Array:
  """Eqs. 11 and 12: (1/D) sum_d ||target[d] - estimate[d]||^2, the squared norm over channels averaged over
  time and batch. target, estimate: (batch, time, channels)."""
  error = (target.astype(jnp.float32) - estimate.astype(jnp.float32)) ** 2
  return jnp.mean(jnp.sum(error, axis=-1))


def reconstruction_loss(vocals: jax.Array, estimate: jax.Array, kind: str = 'mse',
                        mixture: jax.Array | None = None) -> jax.Array:
  """L_rec as trained; arrays `(batch, time, channels)`, result a scalar.

  'mse' is Eq. 12 (`squared_error_per_sample`). 'sdr' is minus each crop's SDR in dB, averaged over the batch:
  every crop's error counts relative to its own vocals, as in the per-clip uSDR the benchmarks report, not by its
  loudness. Both energies get a floor of `SDR_LOSS_FLOOR_DB` below the crop's `mixture` energy, so a crop without
  vocals asks for an estimate that is quiet relative to its mixture (instead of an unbounded -SDR) and no crop's
  SDR counts beyond about that many dB (the thresholded SNR of Wisdom et al., 2020).
  """
  if kind == 'mse':
    return squared_error_per_sample(vocals, estimate)
  if kind != 'sdr':
    raise ValueError(f'unknown reconstruction loss {kind!r}')
  vocals, estimate, mixture = (a.astype(jnp.float32) for a in (vocals, estimate, mixture))
  axes = tuple(range(1, vocals.ndim))
  floor = 10.0 ** (-SDR_LOSS_FLOOR_DB / 10.0) * jnp.sum(jnp.square(mixture), axis=axes) + metrics.USDR_DELTA
  signal = jnp.sum(jnp.square(vocals), axis=axes) + floor
  error = jnp.sum(jnp.square(vocals - estimate), axis=axes) + floor
  return jnp.mean(10.0 * jnp.log10(error / signal))


def loss_weight(sigma: jax.Array, weighting: str = 'uniform', gamma: float = 5.0) -> jax.Array:
  """Per-example weight `(batch,)` of the v squared error.

  'uniform' is the paper's v-MSE (1 everywhere: the x0 error counts 1 + SNR times, SNR = alpha^2 / beta^2).
  'min_snr' is Min-SNR-gamma (Hang et al., 2023): min(SNR, gamma) / (1 + SNR), so the x0 error counts
  min(SNR, gamma) times and the nearly clean steps no longer dominate.
  """
  if weighting == 'uniform':
    return jnp.ones_like(sigma, jnp.float32)
  if weighting != 'min_snr':
    raise ValueError(f'unknown loss weighting {weighting!r}')
  alpha, beta = alpha_beta(sigma.astype(jnp.float32))
  snr = alpha ** 2 / jnp.maximum(beta ** 2, 1e-12)
  return jnp.minimum(snr, gamma) / (1.0 + snr)


def loss_terms(v_hat: jax.Array | None, v_true: jax.Array, vocals: jax.Array, latent_estimate: jax.Array | None,
               reconstruction_estimate: jax.Array, *, v_weight: float = 1.0, latent_weight: float = 1.0,
               reconstruction_weight: float = 1.0, example_weight: jax.Array | None = None,
               reconstruction_kind: str = 'mse', mixture: jax.Array | None = None) -> LossTerms:
  """L = w_v * L_diff + w_lat * L_lat + w_rec * L_rec; all arrays (batch, time, channels).

  L_diff is the mean squared error over every element (audio-diffusion-pytorch's `mse_loss`), each example's
  error multiplied by `example_weight` `(batch,)` when given (`loss_weight`). A term whose estimate is None (the
  mask baseline has no generator, the spectral models no latent head) is 0. L_rec in the total is
  `reconstruction_loss(vocals, reconstruction_estimate, reconstruction_kind, mixture)`; the returned
  `reconstruction_mse` is Eq. 12 in either case.
  """
  zero = jnp.zeros((), jnp.float32)
  if v_hat is None:
    v_mse = zero
  else:
    error = jnp.mean((v_hat.astype(jnp.float32) - v_true.astype(jnp.float32)) ** 2, axis=(1, 2))
    v_mse = jnp.mean(error if example_weight is None else error * example_weight)
  latent_mse = zero if latent_estimate is None else squared_error_per_sample(vocals, latent_estimate)
  reconstruction_mse = squared_error_per_sample(vocals, reconstruction_estimate)
  reconstruction = reconstruction_loss(vocals, reconstruction_estimate, reconstruction_kind, mixture)
  total = v_weight * v_mse + latent_weight * latent_mse + reconstruction_weight * reconstruction
  return LossTerms(total, v_mse, latent_mse, reconstruction_mse)
