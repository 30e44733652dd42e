"""The sampler against independent references: an oracle v-function, a float64 numpy DDIM loop, scipy's
Butterworth response; plus PRNG discipline, the scan/loop equivalence, refinement, ensembles and caching."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from diffvox_jax import noise, sampler
from diffvox_jax.config import load_config
from diffvox_jax.sampler import Network, SamplerSettings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / 'tools'))
import bench_sampler  # noqa: E402  (the Python-loop sampler, the reference for the scan)

RATE = 8000
BATCH, LENGTH, CHANNELS = 2, 256, 2


def _alpha_beta(sigma):
  return jnp.cos(jnp.pi * sigma / 2), jnp.sin(jnp.pi * sigma / 2)


def _oracle_network() -> Network:
  """The conditioner passes the true x0 through; the generator returns the exact v for that x0.

  From Eqs. 1-2 with x = alpha x0 + beta eps: eps = (x - alpha x0) / beta, so v = alpha eps - beta x0 =
  (alpha x - x0) / beta.
  """

  def denoise(params, x, sigma, x0):
    alpha, beta = _alpha_beta(sigma[:, None, None])
    return (alpha * x - x0) / beta

  return Network(lambda params, mixture: mixture, denoise)


def _linear_network() -> Network:
  """A small random linear 'model': v = (x W) (0.5 + sigma) + c U with features c = 0.7 mixture."""

  def denoise(params, x, sigma, features):
    return (x @ params['w']) * (0.5 + sigma[:, None, None]) + features @ params['u']

  return Network(lambda params, mixture: 0.7 * mixture, denoise)


def _linear_params(seed=0):
  rng = np.random.default_rng(seed)
  return {'w': jnp.asarray(rng.normal(0, 0.4, (CHANNELS, CHANNELS)), jnp.float32),
          'u': jnp.asarray(rng.normal(0, 0.4, (CHANNELS, CHANNELS)), jnp.float32)}


def _signal(seed=0, batch=BATCH):
  return jnp.asarray(np.random.default_rng(seed).normal(0, 0.5, (batch, LENGTH, CHANNELS)), jnp.float32)


def _settings(**fields) -> SamplerSettings:
  return SamplerSettings(**{'steps': 10, 'sample_rate': RATE, **fields})


def _run(network, settings, params, mixture, seed=0, initial=None, **kwargs):
  return sampler.compiled_sampler(network, settings)(params, mixture, jax.random.key(seed), initial, **kwargs)


@pytest.mark.parametrize('method', sampler.METHODS)
@pytest.mark.parametrize('steps', [1, 2, 5, 20])
@pytest.mark.parametrize('eta,cutoff_hz', [(0.0, 0.0), (0.4, 0.0), (0.8, 1500.0)])
def test_oracle_recovers_x0(method, steps, eta, cutoff_hz):
  x0 = _signal()
  settings = _settings(steps=steps, method=method, eta=eta, cutoff_hz=cutoff_hz)
  np.testing.assert_allclose(_run(_oracle_network(), settings, {}, x0), x0, atol=2e-5)


def _oracle_with_direct_estimate(rough_estimate) -> Network:
  """The oracle whose conditioner also reports `rough_estimate` as its direct estimate."""
  oracle = _oracle_network()
  return Network(oracle.condition, oracle.denoise, lambda params, mixture: (mixture, rough_estimate))


@pytest.mark.parametrize('method', sampler.METHODS)
@pytest.mark.parametrize('steps', [1, 2, 5, 20])
@pytest.mark.parametrize('eta', [0.0, 0.5])
def test_oracle_recovers_x0_from_the_direct_estimate(method, steps, eta):
  x0 = _signal()
  network = _oracle_with_direct_estimate(x0 + _signal(seed=5))
  settings = _settings(steps=steps, method=method, eta=eta, cutoff_hz=1000.0, sigma_start=0.6, start='direct')
  np.testing.assert_allclose(_run(network, settings, {}, x0), x0, atol=2e-5)


@pytest.mark.parametrize('schedule', ['cosine', 'edm', 'log_snr'])
def test_oracle_recovers_x0_on_other_schedules(schedule):
  x0 = _signal()
  out = _run(_oracle_network(), _settings(steps=20, schedule=schedule, eta=0.4, cutoff_hz=1000.0), {}, x0)
  np.testing.assert_allclose(out, x0, atol=2e-5)


def test_refinement_with_the_oracle_returns_x0():
  x0 = _signal()
  rough_estimate = x0 + _signal(seed=5)
  settings = _settings(steps=5, eta=0.4, cutoff_hz=1000.0, sigma_start=0.5)
  np.testing.assert_allclose(_run(_oracle_network(), settings, {}, x0, initial=rough_estimate), x0, atol=2e-5)


def _numpy_ddim(params, mixture, sigmas, eta, keys, gain, initial=None):
  """Step-by-step float64 reference of Eqs. 1, 4-7 and 10 with the DDIM eta term of docs/paper.md.

  `keys[m]` is member m's key; noise is drawn exactly as the sampler documents (fold_in 0 for the start, i + 1
  for step i) and then used in float64.
  """
  w, u = (np.asarray(params[k], np.float64) for k in ('w', 'u'))
  features = 0.7 * np.asarray(mixture, np.float64)
  shape = mixture.shape[1:]

  def draw(fold, shaping):
    return np.stack([np.asarray(noise.shaped_normal(jax.random.fold_in(k, fold), shape, shaping), np.float64)
                     for k in keys])

  x = draw(0, None)
  if initial is not None:
    x = np.cos(np.pi * sigmas[0] / 2) * np.asarray(initial, np.float64) + np.sin(np.pi * sigmas[0] / 2) * x
  for i in range(len(sigmas) - 1):
    a, b = np.cos(np.pi * sigmas[i] / 2), np.sin(np.pi * sigmas[i] / 2)
    a_next, b_next = np.cos(np.pi * sigmas[i + 1] / 2), np.sin(np.pi * sigmas[i + 1] / 2)
    v = (x @ w) * (0.5 + sigmas[i]) + features @ u
    x0_hat, eps_hat = a * x - b * v, b * x + a * v
    delta = eta * b_next / b * np.sqrt(1 - a**2 / a_next**2)
    x = a_next * x0_hat + np.sqrt(b_next**2 - delta**2) * eps_hat
    if eta > 0:
      x = x + delta * draw(i + 1, gain)
  return x


@pytest.mark.parametrize('schedule,eta,cutoff_hz,sigma_start', [
    ('linear', 0.0, 0.0, 1.0), ('cosine', 0.0, 0.0, 1.0), ('edm', 0.0, 0.0, 1.0), ('linear', 0.4, 0.0, 1.0),
    ('linear', 0.4, 2000.0, 1.0), ('linear', 0.0, 0.0, 0.6), ('cosine', 0.8, 500.0, 0.6)])
def test_matches_float64_numpy_reference(schedule, eta, cutoff_hz, sigma_start):
  params, mixture = _linear_params(), _signal()
  settings = _settings(steps=12, schedule=schedule, eta=eta, cutoff_hz=cutoff_hz, sigma_start=sigma_start)
  initial = _signal(seed=3) if sigma_start < 1 else None
  rng = jax.random.key(7)
  keys = [jax.random.fold_in(jax.random.fold_in(rng, b), 0) for b in range(BATCH)]  # one member per chunk.
  expected = _numpy_ddim(params, mixture, settings.sigmas(), eta, keys, settings.noise_gain(LENGTH), initial)
  out = sampler.compiled_sampler(_linear_network(), settings)(params, mixture, rng, initial)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def _linear_data_prediction(params, mixture, x, sigma):
  """x0 = alpha x - beta v of `_linear_network` in float64."""
  w, u = (np.asarray(params[k], np.float64) for k in ('w', 'u'))
  v = (x @ w) * (0.5 + sigma) + (0.7 * np.asarray(mixture, np.float64)) @ u
  return np.cos(np.pi * sigma / 2) * x - np.sin(np.pi * sigma / 2) * v


def _numpy_dpmpp_2m(data_prediction, x, sigmas):
  """DPM-Solver++(2M) as published (Lu et al. 2022, Algorithm 2, data prediction) in float64, in the log-SNR
  lambda = log(alpha / sigma): x_i = (s_i / s_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) D_i, first order at the
  first step, after an infinite step and at the last step (`lower_order_final`)."""
  alphas, betas = np.where(sigmas < 1, np.cos(np.pi * sigmas / 2), 0.0), np.sin(np.pi * sigmas / 2)
  with np.errstate(divide='ignore'):
    lambdas = np.log(alphas) - np.log(betas)
  previous, previous_h = None, np.inf
  for i in range(len(sigmas) - 1):
    x0 = data_prediction(x, sigmas[i])
    if i == len(sigmas) - 2:
      return x0
    h = lambdas[i + 1] - lambdas[i]
    d = x0
    if previous is not None and np.isfinite(previous_h):
      r = previous_h / h
      d = (1 + 1 / (2 * r)) * x0 - previous / (2 * r)
    x = (betas[i + 1] / betas[i]) * x - alphas[i + 1] * (np.exp(-h) - 1) * d
    previous, previous_h = x0, h
  return x


def _numpy_heun(data_prediction, x, sigmas):
  """EDM's Algorithm 1 (Karras et al. 2022, deterministic Heun) in float64 on y = x / alpha against the
  noise-to-signal ratio t = beta / alpha, with an Euler step from t = inf (sigma = 1, the DDIM step) and into
  t = 0."""
  for i in range(len(sigmas) - 1):
    alpha, beta = np.cos(np.pi * sigmas[i] / 2), np.sin(np.pi * sigmas[i] / 2)
    alpha_next, beta_next = np.cos(np.pi * sigmas[i + 1] / 2), np.sin(np.pi * sigmas[i + 1] / 2)
    x0 = data_prediction(x, sigmas[i])
    if sigmas[i] >= 1.0:
      x = alpha_next * x0 + beta_next * (x - alpha * x0) / beta
      continue
    y, t, t_next = x / alpha, beta / alpha, beta_next / alpha_next
    d = (y - x0) / t
    y_next = y + (t_next - t) * d
    if sigmas[i + 1] > 0:
      d_next = (y_next - data_prediction(alpha_next * y_next, sigmas[i + 1])) / t_next
      y_next = y + (t_next - t) * (d + d_next) / 2
    x = alpha_next * y_next
  return x


@pytest.mark.parametrize('method,reference', [('dpmpp_2m', _numpy_dpmpp_2m), ('heun', _numpy_heun)])
@pytest.mark.parametrize('schedule,sigma_start', [('linear', 1.0), ('log_snr', 1.0), ('cosine', 0.7)])
def test_higher_order_steps_match_their_published_updates(method, reference, schedule, sigma_start):
  params, mixture = _linear_params(), _signal()
  settings = _settings(steps=9, method=method, schedule=schedule, sigma_start=sigma_start)
  initial = _signal(seed=3) if sigma_start < 1 else None
  rng = jax.random.key(7)
  start = np.stack([np.asarray(noise.shaped_normal(jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
      rng, b), 0), 0), (LENGTH, CHANNELS), None), np.float64) for b in range(BATCH)])
  if initial is not None:
    start = np.cos(np.pi * sigma_start / 2) * np.asarray(initial, np.float64) + np.sin(np.pi * sigma_start / 2) * start
  expected = reference(lambda x, sigma: _linear_data_prediction(params, mixture, x, sigma), start,
                       settings.sigmas())
  out = sampler.compiled_sampler(_linear_network(), settings)(params, mixture, rng, initial)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


GAUSSIAN_STD = 0.5


def _gaussian_network() -> Network:
  """The exact v for data x0 ~ N(mean, 0.5^2) per sample, the mean being the mixture: E[x0 | x] is linear in x."""

  def denoise(params, x, sigma, mean):
    alpha, beta = _alpha_beta(sigma[:, None, None])
    x0 = mean + alpha * GAUSSIAN_STD**2 / (alpha**2 * GAUSSIAN_STD**2 + beta**2) * (x - alpha * mean)
    return (alpha * x - x0) / beta

  return Network(lambda params, mixture: mixture, denoise)


@pytest.mark.parametrize('method,order', [('ddim', 1), ('dpmpp_2m', 2), ('heun', 2)])
def test_convergence_order_on_the_gaussian_probability_flow(method, order):
  """For Gaussian data the probability-flow ODE from x(1) = z ends at mean + 0.5 z; halving the step of the
  log-SNR grid divides the error by about 2^order."""
  mean, rng = _signal(seed=4), jax.random.key(3)
  z = np.stack([np.asarray(noise.shaped_normal(jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
      rng, b), 0), 0), (LENGTH, CHANNELS), None), np.float64) for b in range(BATCH)])
  exact = np.asarray(mean, np.float64) + GAUSSIAN_STD * z
  errors = []
  for steps in (32, 64):
    settings = _settings(steps=steps, method=method, schedule='log_snr')
    out = np.asarray(sampler.compiled_sampler(_gaussian_network(), settings)({}, mean, rng), np.float64)
    errors.append(np.sqrt(np.mean((out - exact) ** 2)))
  assert 2**order * 0.85 < errors[0] / errors[1] < 2**order * 1.25


def test_evaluations_count_heuns_corrector():
  assert _settings(steps=10, method='heun').evaluations == 18  # Euler from sigma = 1 and into sigma = 0.
  assert _settings(steps=10, method='heun', sigma_start=0.5, start='direct').evaluations == 19
  assert _settings(steps=10, method='dpmpp_2m').evaluations == 10
  assert _settings(steps=0).evaluations == 0


def test_multistep_weights_are_first_order_where_the_log_snr_is_infinite():
  weights = sampler.multistep_weights(np.linspace(1, 0, 6))
  assert weights[0] == weights[1] == weights[-1] == 0.0 and np.all(weights[2:-1] > 0)
  grid = np.array([0.8, 0.5, 0.2, 0.0])
  snr = -np.log(np.tan(np.pi * grid[:3] / 2))
  np.testing.assert_allclose(sampler.multistep_weights(grid), [0.0, (snr[2] - snr[1]) / (2 * (snr[1] - snr[0])), 0.0])


def test_step_coefficients_edge_cases():
  eta = 0.4
  sigmas = np.linspace(1, 0, 11)
  c = sampler.step_coefficients(sigmas, eta)
  beta_next = np.sin(np.pi * sigmas[1:] / 2)
  np.testing.assert_allclose(c.delta[0], eta * beta_next[0])  # alpha_T = 0 at sigma = 1.
  assert c.delta[-1] == 0.0 and c.beta_next[-1] == 0.0 and c.alpha_next[-1] == 1.0  # last step returns x0.
  np.testing.assert_allclose(c.beta_next**2 + c.delta**2, beta_next**2, atol=1e-15)  # marginal noise preserved.
  np.testing.assert_array_equal(sampler.step_coefficients(sigmas, 0.0).delta, 0.0)
  with pytest.raises(ValueError, match='strictly decreasing'):
    sampler.step_coefficients(np.array([1.0, 0.5, 0.5, 0.0]), eta)


@pytest.mark.parametrize('cutoff_hz,order', [(600.0, 4), (2000.0, 4), (5000.0, 4), (1000.0, 2)])
def test_shaping_gain_follows_scipy_butterworth(cutoff_hz, order):
  rate, length = 44100, 4096
  sos = signal.butter(order, cutoff_hz, 'highpass', fs=rate, output='sos')
  frequencies, response = signal.sosfreqz(sos, worN=np.fft.rfftfreq(length, 1 / rate), fs=rate)
  gain = noise.shaping_gain(length, rate, cutoff_hz, order)
  # Same shape up to the normalising constant: compare with both scaled to 1 at Nyquist (|H| = 1 there).
  np.testing.assert_allclose(gain / gain[-1], np.abs(response), atol=1e-6)


def test_shaped_noise_has_unit_variance_and_the_butterworth_spectrum():
  rate, length, draws, cutoff_hz = 16000, 2048, 400, 2000.0
  gain = noise.shaping_gain(length, rate, cutoff_hz, 4)
  keys = jax.random.split(jax.random.key(0), draws)
  samples = np.asarray(jax.vmap(lambda k: noise.shaped_normal(k, (length, 2), gain))(keys), np.float64)
  assert abs(samples.var() - 1.0) < 0.02  # 1.6 M samples.
  per_position = samples.var(axis=(0, 2)).reshape(16, -1).mean(axis=1)  # 16 stretches of the chunk.
  np.testing.assert_allclose(per_position, 1.0, atol=0.03)  # stationary: no filter transient at the edges.
  periodogram = np.mean(np.abs(np.fft.rfft(samples, axis=1)) ** 2, axis=(0, 2)) / length
  _, response = signal.sosfreqz(signal.butter(4, cutoff_hz, 'highpass', fs=rate, output='sos'),
                                worN=np.fft.rfftfreq(length, 1 / rate), fs=rate)
  power = np.abs(response) ** 2
  two_sided_mean = (power[0] + power[-1] + 2 * power[1:-1].sum()) / length
  expected = power / two_sided_mean
  bands = lambda a: a[1:].reshape(32, -1).mean(axis=1)  # noqa: E731  (bins 1..1024 -> 32 bands of 32)
  np.testing.assert_allclose(bands(periodogram), bands(expected), rtol=0.05, atol=2e-3)
  assert bands(periodogram)[0] < 1e-3  # the stop band (0 to 250 Hz) is empty.


def test_white_noise_needs_no_gain():
  assert _settings(cutoff_hz=0.0).noise_gain(LENGTH) is None
  assert _settings(cutoff_hz=100.0).noise_gain(LENGTH).shape == (LENGTH // 2 + 1,)


def test_same_seed_same_output_and_seeds_differ_with_eta():
  params, mixture = _linear_params(), _signal()
  settings = _settings(eta=0.4, cutoff_hz=1000.0)
  first = _run(_linear_network(), settings, params, mixture, seed=1)
  np.testing.assert_array_equal(first, _run(_linear_network(), settings, params, mixture, seed=1))
  assert np.max(np.abs(first - _run(_linear_network(), settings, params, mixture, seed=2))) > 1e-2


def test_refinement_noise_changes_the_result_when_eta_is_positive():
  params, mixture = _linear_params(), _signal()
  deterministic = _run(_linear_network(), _settings(eta=0.0), params, mixture, seed=1)
  stochastic = _run(_linear_network(), _settings(eta=0.4), params, mixture, seed=1)
  assert np.max(np.abs(deterministic - stochastic)) > 1e-2


@pytest.mark.parametrize('method', sampler.METHODS)
def test_scan_equals_python_loop(method):
  params, mixture = _linear_params(), _signal()
  settings = _settings(steps=8, method=method, eta=0.5, cutoff_hz=1000.0, num_samples=2)
  rng = jax.random.key(3)
  scanned = sampler.compiled_sampler(_linear_network(), settings)(params, mixture, rng)
  looped = bench_sampler.sample_with_python_loop(_linear_network(), settings, params, mixture, rng)
  np.testing.assert_allclose(scanned, looped, rtol=1e-5, atol=1e-5)


def test_ensemble_runs_the_conditioner_once_per_chunk_and_averages():
  seen_batches = []

  def condition(params, mixture):
    seen_batches.append(mixture.shape[0])
    return 0.7 * mixture

  network = Network(condition, _linear_network().denoise)
  params, mixture = _linear_params(), _signal()
  settings = _settings(eta=0.4, cutoff_hz=1000.0, num_samples=3)
  mean, members = _run(network, settings, params, mixture, return_samples=True)
  assert seen_batches == [BATCH]
  assert members.shape == (BATCH, 3, LENGTH, CHANNELS) and mean.shape == (BATCH, LENGTH, CHANNELS)
  np.testing.assert_allclose(mean, members.mean(axis=1), atol=1e-6)
  assert np.max(np.abs(members[:, 0] - members[:, 1])) > 1e-2  # members draw different noise.
  # Member 0 of chunk b uses the same keys as a single-sample run: fold_in(fold_in(rng, b), 0).
  single = _run(network, _settings(eta=0.4, cutoff_hz=1000.0), params, mixture)
  np.testing.assert_allclose(members[:, 0], single, atol=1e-6)


def test_a_key_per_chunk_makes_chunks_independent_of_their_batch():
  params, mixture = _linear_params(), _signal(batch=3)
  keys = jax.random.split(jax.random.key(0), 3)
  run = sampler.compiled_sampler(_linear_network(), _settings(eta=0.4, cutoff_hz=1000.0))
  together = run(params, mixture, keys)
  alone = run(params, mixture[1:2], keys[1:2])
  np.testing.assert_allclose(together[1:2], alone, atol=1e-6)
  with pytest.raises(ValueError, match='one key per chunk'):
    run(params, mixture, keys[:2])


def test_compiles_once_per_setting():
  traces = []

  def denoise(params, x, sigma, features):
    traces.append(1)
    return _linear_network().denoise(params, x, sigma, features)

  network = Network(_linear_network().condition, denoise)
  settings = _settings(eta=0.2)
  assert sampler.compiled_sampler(network, settings) is sampler.compiled_sampler(network, _settings(eta=0.2))
  for seed in range(3):
    _run(network, settings, _linear_params(seed), _signal(seed), seed=seed)
  assert len(traces) == 1  # one trace of the scan body for three calls with new params, audio and keys.


def test_refinement_argument_errors():
  run = sampler.compiled_sampler(_linear_network(), _settings(sigma_start=0.5))
  with pytest.raises(ValueError, match='pass `initial`'):
    run(_linear_params(), _signal(), jax.random.key(0))
  run = sampler.compiled_sampler(_linear_network(), _settings())
  with pytest.raises(ValueError, match='sigma_start < 1'):
    run(_linear_params(), _signal(), jax.random.key(0), _signal())


def test_settings_from_config_and_validation():
  config = load_config('cpu_tiny')
  settings = SamplerSettings.from_config(config, eta=0.2)
  assert settings == SamplerSettings(steps=20, schedule='linear', eta=0.2, cutoff_hz=5000.0, filter_order=4,
                                     sample_rate=22050, num_samples=1, sigma_start=1.0)
  assert hash(settings) == hash(SamplerSettings.from_config(config, eta=0.2))
  for bad in ({'steps': -1}, {'start': 'direct'}, {'start': 'elsewhere', 'sigma_start': 0.5}, {'eta': 1.5},
              {'schedule': 'nope'}, {'cutoff_hz': 4000.0}, {'num_samples': 0},
              {'sigma_start': 0.0}):
    with pytest.raises(ValueError):
      _settings(**bad)


def _direct_network(direct_scale: float = 0.6) -> Network:
  """The oracle network (features = the true x0) with a direct estimate `direct_scale * x0`."""
  oracle = _oracle_network()
  return Network(oracle.condition, oracle.denoise, lambda params, x0: (x0, direct_scale * x0))


def test_zero_steps_return_the_direct_estimate_without_the_generator():
  def denoise(params, x, sigma, features):
    raise AssertionError('steps=0 must not run the generator')

  network = Network(lambda p, m: m, denoise, lambda params, mixture: (mixture, 0.25 * mixture))
  x0 = _signal()
  mean, members = _run(network, _settings(steps=0, num_samples=3), {}, x0, return_samples=True)
  np.testing.assert_allclose(mean, 0.25 * x0, atol=1e-7)
  assert members.shape == (BATCH, 1, LENGTH, CHANNELS)
  scaled = _run(network, _settings(steps=0, data_scale=10.0), {}, x0)  # the estimate comes back in audio units.
  np.testing.assert_allclose(scaled, 0.25 * x0, atol=1e-6)


def test_start_direct_refines_the_conditioners_own_estimate():
  x0 = _signal()
  settings = _settings(steps=4, sigma_start=0.5, start='direct', eta=0.3)
  # The oracle generator recovers x0 from any start; the start must be the direct estimate noised to sigma 0.5.
  np.testing.assert_allclose(_run(_direct_network(), settings, {}, x0), x0, atol=2e-5)
  prepared = sampler.prepare(_direct_network(0.6), settings, {}, x0, jax.random.key(0))
  noise0 = sampler.prepare(_direct_network(0.0), settings, {}, x0, jax.random.key(0)).x / np.sin(np.pi / 4)
  np.testing.assert_allclose(prepared.x, np.cos(np.pi / 4) * 0.6 * x0 + np.sin(np.pi / 4) * noise0, atol=1e-5)
  with pytest.raises(ValueError, match='no direct estimate'):
    _run(_oracle_network(), settings, {}, x0)
  with pytest.raises(ValueError, match="start='noise'"):
    _run(_direct_network(), settings, {}, x0, initial=x0)
