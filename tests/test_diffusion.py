"""The v-objective (paper §2) against direct float64 numpy computation.

Float64 is switched on only inside `jax.enable_x64(True)` blocks, so other tests keep jax's float32 default.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffvox_jax import diffusion, metrics


def signals(batch: int = 4, time: int = 64, seed: int = 0):
  rng = np.random.default_rng(seed)
  x0 = rng.normal(scale=0.3, size=(batch, time, 2))
  noise = rng.normal(size=(batch, time, 2))
  return x0, noise


def numpy_alpha_beta(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  phi = np.pi * sigma / 2
  return np.cos(phi)[:, None, None], np.sin(phi)[:, None, None]


def test_alpha_beta_are_cos_and_sin_of_half_pi_sigma():
  sigma = np.linspace(0.0, 1.0, 11)
  with jax.enable_x64(True):
    alpha, beta = diffusion.alpha_beta(jnp.asarray(sigma))
    assert alpha.dtype == jnp.float64
  np.testing.assert_allclose(alpha, np.cos(np.pi * sigma / 2), rtol=0, atol=1e-15)
  np.testing.assert_allclose(beta, np.sin(np.pi * sigma / 2), rtol=0, atol=1e-15)
  np.testing.assert_allclose(np.asarray(alpha) ** 2 + np.asarray(beta) ** 2, 1.0, atol=1e-15)


def test_noising_and_v_target_match_the_equations_per_example():
  x0, noise = signals()
  sigma = np.array([0.05, 0.3, 0.71, 0.98])
  alpha, beta = numpy_alpha_beta(sigma)
  with jax.enable_x64(True):
    x_sigma = diffusion.add_noise(jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(sigma))
    v = diffusion.v_target(jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(sigma))
  np.testing.assert_allclose(x_sigma, alpha * x0 + beta * noise, rtol=1e-14, atol=1e-15)  # Eq. 1
  np.testing.assert_allclose(v, alpha * noise - beta * x0, rtol=1e-14, atol=1e-15)  # Eq. 2


def test_x0_and_noise_are_recovered_exactly_from_the_true_v():
  x0, noise = signals(seed=1)
  sigma = np.array([0.0, 0.2, 0.5, 1.0])
  with jax.enable_x64(True):
    x_sigma = diffusion.add_noise(jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(sigma))
    v = diffusion.v_target(jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(sigma))
    x0_hat = diffusion.x0_from_v(x_sigma, v, jnp.asarray(sigma))  # Eq. 5
    noise_hat = diffusion.noise_from_v(x_sigma, v, jnp.asarray(sigma))  # Eq. 6
  np.testing.assert_allclose(x0_hat, x0, rtol=0, atol=1e-14)
  np.testing.assert_allclose(noise_hat, noise, rtol=0, atol=1e-14)


@pytest.mark.parametrize('sigma,expected_x_sigma,expected_v', [(0.0, 'x0', 'noise'), (1.0, 'noise', '-x0')])
def test_boundary_sigmas(sigma, expected_x_sigma, expected_v):
  x0, noise = signals(seed=2)
  named = {'x0': x0, 'noise': noise, '-x0': -x0}
  sigmas = jnp.full((x0.shape[0],), sigma)
  with jax.enable_x64(True):
    sigmas = jnp.asarray(sigmas, jnp.float64)
    x_sigma = diffusion.add_noise(jnp.asarray(x0), jnp.asarray(noise), sigmas)
    v = diffusion.v_target(jnp.asarray(x0), jnp.asarray(noise), sigmas)
  # cos(pi / 2) is 6e-17 in floating point, not exactly 0.
  np.testing.assert_allclose(x_sigma, named[expected_x_sigma], rtol=0, atol=1e-15)
  np.testing.assert_allclose(v, named[expected_v], rtol=0, atol=1e-15)


def test_float32_inputs_stay_float32():
  x0, noise = (jnp.asarray(a, jnp.float32) for a in signals())
  sigma = jnp.asarray([0.1, 0.2, 0.3, 0.4], jnp.float32)
  assert diffusion.add_noise(x0, noise, sigma).dtype == jnp.float32
  assert diffusion.v_target(x0, noise, sigma).dtype == jnp.float32


def test_loss_terms_against_a_numpy_recomputation():
  rng = np.random.default_rng(3)
  v_hat, v_true, vocals, latent_estimate, reconstruction_estimate = (
      rng.normal(size=(3, 50, 2)) for _ in range(5))
  weights = dict(v_weight=1.0, latent_weight=0.5, reconstruction_weight=2.0)
  terms = diffusion.loss_terms(*(jnp.asarray(a, jnp.float32) for a in (
      v_hat, v_true, vocals, latent_estimate, reconstruction_estimate)), **weights)
  v_mse = np.mean((v_hat - v_true) ** 2)  # Eq. 3: mean over every element.
  latent_mse = np.mean(np.sum((vocals - latent_estimate) ** 2, axis=-1))  # Eq. 11: sum over channels, mean over time.
  reconstruction_mse = np.mean(np.sum((vocals - reconstruction_estimate) ** 2, axis=-1))  # Eq. 12.
  total = v_mse + 0.5 * latent_mse + 2.0 * reconstruction_mse
  np.testing.assert_allclose(terms.v_mse, v_mse, rtol=1e-5)
  np.testing.assert_allclose(terms.latent_mse, latent_mse, rtol=1e-5)
  np.testing.assert_allclose(terms.reconstruction_mse, reconstruction_mse, rtol=1e-5)
  np.testing.assert_allclose(terms.total, total, rtol=1e-5)


def test_loss_is_zero_for_perfect_estimates():
  x0, noise = (jnp.asarray(a, jnp.float32) for a in signals())
  terms = diffusion.loss_terms(noise, noise, x0, x0, x0)
  assert float(terms.total) == 0.0


def test_sdr_reconstruction_loss_against_a_float64_recomputation():
  rng = np.random.default_rng(4)
  vocals = rng.normal(size=(3, 400, 2)) * np.array([1.0, 0.1, 0.0])[:, None, None]  # loud, quiet, silent
  mixture = vocals + rng.normal(size=vocals.shape)
  estimate = vocals + 0.05 * rng.normal(size=vocals.shape)

  def minus_sdr(v, e, m):  # -10 log10((|v|^2 + f) / (|v - e|^2 + f)), f 30 dB below |m|^2 (+ uSDR's delta)
    floor = 1e-3 * np.sum(m ** 2) + 1e-7
    return -10 * np.log10((np.sum(v ** 2) + floor) / (np.sum((v - e) ** 2) + floor))

  expected = np.mean([minus_sdr(*abc) for abc in zip(vocals, estimate, mixture, strict=True)])
  v32, e32, m32 = (jnp.asarray(a, jnp.float32) for a in (vocals, estimate, mixture))
  np.testing.assert_allclose(diffusion.reconstruction_loss(v32, e32, 'sdr', m32), expected, rtol=1e-4)
  # an unfloored crop is minus its uSDR; the silent one scores its estimate against the floor and is finite.
  assert abs(minus_sdr(vocals[0], estimate[0], 0 * mixture[0]) + metrics.usdr(vocals[0], estimate[0])) < 1e-9
  silent_floor = 1e-3 * np.sum(mixture[2] ** 2) + 1e-7
  assert np.isclose(minus_sdr(vocals[2], estimate[2], mixture[2]),
                    10 * np.log10(1 + np.sum(estimate[2] ** 2) / silent_floor))
  terms = diffusion.loss_terms(None, v32, v32, None, e32, reconstruction_weight=2.0, reconstruction_kind='sdr',
                               mixture=m32)
  np.testing.assert_allclose(terms.total, 2.0 * expected, rtol=1e-4)
  # the logged term stays Eq. 12's squared error, whichever loss trains.
  np.testing.assert_allclose(terms.reconstruction_mse, np.mean(np.sum((vocals - estimate) ** 2, axis=-1)), rtol=1e-4)
  with pytest.raises(ValueError, match='reconstruction loss'):
    diffusion.reconstruction_loss(v32, e32, 'l1', m32)
