"""The spectral models: the STFT against scipy, the mask baseline's round trip and training, the generator's
x0 parameterisation, Min-SNR weighting against a float64 formula, and their config checks."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from random_models import HOP, N_FFT, tiny_spectral
from scipy import signal

from diffvox_jax import diffusion, files, inference, sampler
from diffvox_jax.config import ConfigError, load_config, validate
from diffvox_jax.models import build_model, for_sampling, parameter_counts
from diffvox_jax.models.spectral import BETA_FLOOR
from diffvox_jax.models.stft import istft, stft
from diffvox_jax.train import loop
from diffvox_jax.train import state as state_lib
from diffvox_jax.train import step as step_lib


def _audio(batch=2, time=2048, channels=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(0, 0.3, (batch, time, channels)), jnp.float32)


def test_stft_matches_scipy_and_inverts_exactly():
  x = _audio(time=4096)
  spectrum = stft(x, N_FFT, HOP)
  assert spectrum.shape == (2, 4096 // HOP + 1, 2, N_FFT // 2 + 1)
  _, _, reference = signal.stft(np.asarray(x[1, :, 0], np.float64), window='hann', nperseg=N_FFT,
                                noverlap=N_FFT - HOP, boundary='zeros', padded=False)
  # scipy divides by the window's sum (N_FFT / 2 for the periodic Hann window).
  np.testing.assert_allclose(np.asarray(spectrum[1, :, 0]).T, reference * (N_FFT / 2), atol=2e-4)
  np.testing.assert_allclose(istft(spectrum, N_FFT, HOP, 4096), x, atol=2e-6)
  with pytest.raises(ValueError, match='multiple of the STFT hop'):
    stft(x[:, :100], N_FFT, HOP)


def test_mask_baseline_with_a_full_mask_returns_the_mixture():
  config = tiny_spectral('mask', **{'data.channels': 2})  # stereo: channels share the network, each has its own mask.
  model = build_model(config)
  mixture = _audio(time=1024)
  params = model.init(jax.random.key(0), mixture, jnp.ones((2,)), mixture)['params']
  mask = params['conditioner']['mask']
  params['conditioner']['mask'] = {'kernel': jnp.zeros_like(mask['kernel']), 'bias': jnp.full_like(mask['bias'], 40.)}
  v_hat, conditioning = model.apply({'params': params}, mixture, jnp.ones((2,)), mixture)
  assert v_hat is None and conditioning.latent_estimate is None
  np.testing.assert_allclose(conditioning.reconstruction_estimate, mixture, atol=3e-6)
  counts = parameter_counts(config)
  assert counts['generator'] == 0 and counts['total'] == counts['conditioner'] > 0


@pytest.mark.parametrize('kind', ['mask', 'spectral'])
def test_a_few_train_steps_on_one_batch_lower_the_loss(kind):
  config = tiny_spectral(kind, **{'optim.peak_lr': 1e-2})
  model = build_model(config)
  state = jax.jit(lambda rng: state_lib.create_train_state(model, config, rng))(jax.random.key(0))
  train_step = jax.jit(step_lib.make_train_step(model, config))
  time = np.arange(1024)[None, :, None] / 16000
  phase = np.random.default_rng(1).uniform(0, 2 * np.pi, (4, 1, 1))
  vocals = (0.1 * np.sin(2 * np.pi * 440 * time + phase)).astype(np.float32)  # a tone a mask can keep ...
  batch = {'vocals': vocals, 'mixture': vocals + 0.1 * np.sin(2 * np.pi * 3000 * time).astype(np.float32)}  # ...
  losses = []  # ... apart from a tone it can remove.
  for _ in range(15):
    state, metrics = train_step(state, batch, jax.random.key(2))
    losses.append(float(metrics['reconstruction_mse']))
  assert losses[-1] < 0.8 * losses[0]
  assert (float(metrics['v_mse']) > 0) == (kind == 'spectral')


def test_dropout_between_blstm_layers_acts_in_training_only():
  config = tiny_spectral('mask', **{'data.channels': 2})
  config.model.spectral.layers = 2
  model = build_model(config)
  mixture = _audio(time=1024)
  params = model.init(jax.random.key(0), mixture, jnp.ones((2,)), mixture)['params']
  batch = {'vocals': 0.5 * mixture, 'mixture': mixture}
  rng = jax.random.key(3)
  plain = step_lib.make_loss_fn(model, config)
  config.model.spectral.dropout = 0.5
  dropped_model = build_model(config)
  dropped = step_lib.make_loss_fn(dropped_model, config)
  # Without a dropout rng (evaluation, inference) the layer is the identity: the same loss as without dropout.
  np.testing.assert_allclose(dropped(params, batch, rng)[0], plain(params, batch, rng)[0], rtol=1e-6)
  np.testing.assert_allclose(plain(params, batch, rng, train=True)[0], plain(params, batch, rng)[0], rtol=1e-6)
  trained = [float(dropped(params, batch, jax.random.key(seed), train=True)[0]) for seed in (3, 4)]
  assert trained[0] != trained[1] and abs(trained[0] - float(plain(params, batch, rng)[0])) > 1e-6
  estimate = dropped_model.apply({'params': params}, mixture, method='condition').reconstruction_estimate
  assert estimate.shape == (2, 1024, 2)
  with pytest.raises(ConfigError, match='model.spectral.dropout'):
    load_config('mir1k_mask', ['--config.model.spectral.dropout=1.0'])


def test_the_generators_coefficients_set_its_x0_estimate():
  """With the head fixed to a = 0, b = 1 (x0_hat = istft(1 * M) = the mixture), Eq. 5 on its v gives the mixture
  back at every sigma above the floor; with a = 1, b = 0 it gives x_sigma itself (no residual on the mask)."""
  config = tiny_spectral('spectral')
  config.model.spectral.residual = False
  model = build_model(config)
  x, mixture = _audio(time=1024, channels=1), _audio(time=1024, channels=1, seed=1)
  sigma = jnp.array([0.3, 0.9])
  params = model.init(jax.random.key(0), x, sigma, mixture)['params']
  network = sampler.model_network(model)
  features, direct = network.estimate(params, mixture)
  assert direct.shape == mixture.shape
  head = params['generator']['coefficients']
  bins = N_FFT // 2 + 1
  for select, expected in ((2, mixture), (0, x)):  # the b_re block, then the a_re block.
    bias = jnp.zeros_like(head['bias']).at[select * bins:(select + 1) * bins].set(1.0)
    params['generator']['coefficients'] = {'kernel': jnp.zeros_like(head['kernel']), 'bias': bias}
    v_hat = network.denoise(params, x, sigma, features)
    np.testing.assert_allclose(diffusion.x0_from_v(x, v_hat, sigma), expected, atol=2e-5)
  assert float(diffusion.alpha_beta(sigma)[1].min()) > BETA_FLOOR


def test_the_sampling_module_returns_the_generators_x0_below_the_training_floor():
  """With x0_hat fixed to the mixture (head a = 0, b = 1), the training module's v gives the mixture back only above
  BETA_FLOOR; the module `for_sampling` gives it at every sigma, with the same parameters."""
  config = tiny_spectral('spectral')
  config.model.spectral.residual = False
  model = build_model(config)
  x, mixture = _audio(time=1024, channels=1), _audio(time=1024, channels=1, seed=1)
  sigma = jnp.array([0.002, 0.3])  # beta 0.0031 (below the floor) and 0.45
  params = model.init(jax.random.key(0), x, sigma, mixture)['params']
  head = params['generator']['coefficients']
  bins = N_FFT // 2 + 1
  params['generator']['coefficients'] = {'kernel': jnp.zeros_like(head['kernel']),
                                         'bias': jnp.zeros_like(head['bias']).at[2 * bins:3 * bins].set(1.0)}
  x0 = {}
  for name, module in (('training', model), ('sampling', for_sampling(model))):
    network = sampler.model_network(module)
    features, _ = network.estimate(params, mixture)
    x0[name] = diffusion.x0_from_v(x, network.denoise(params, x, sigma, features), sigma)
  np.testing.assert_allclose(x0['sampling'], mixture, atol=2e-5)
  np.testing.assert_allclose(x0['training'][1], mixture[1], atol=2e-5)
  assert float(jnp.max(jnp.abs(x0['training'][0] - mixture[0]))) > 0.1 * float(jnp.max(jnp.abs(mixture[0])))
  assert for_sampling(build_model(tiny_spectral('mask'))).sampling and for_sampling(x) is x  # others unchanged


def test_the_residual_generator_starts_as_the_direct_estimate_and_leaves_the_conditioner_to_l_rec():
  config = tiny_spectral('spectral')
  config.model.spectral.residual = True
  model = build_model(config)
  x, mixture = _audio(batch=3, time=1024, channels=1), _audio(batch=3, time=1024, channels=1, seed=1)
  sigma = jnp.array([0.1, 0.5, 0.95])
  params = model.init(jax.random.key(0), x, sigma, mixture)['params']
  network = sampler.model_network(model)
  features, direct = network.estimate(params, mixture)
  x0_hat = diffusion.x0_from_v(x, network.denoise(params, x, sigma, features), sigma)  # zero-initialised head
  np.testing.assert_allclose(x0_hat, direct, atol=2e-5)

  def v_loss(conditioner_params):
    v_hat, _ = model.apply({'params': {**params, 'conditioner': conditioner_params}}, x, sigma, mixture)
    return jnp.sum(v_hat ** 2)

  gradients = jax.grad(v_loss)(params['conditioner'])
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(gradients))  # detach_conditioner


def test_residual_diffusion_samples_a_correction_added_to_the_direct_estimate():
  """diffusion.target='residual': with the generator's head at zero the sampled residual is 0, so the sampler
  returns the direct estimate; the train step's v target is that of vocals minus the direct estimate."""
  config = tiny_spectral('spectral', **{'sampler.steps': 3, 'sampler.num_samples': 2})
  assert config.diffusion.target == 'residual' and not config.model.spectral.residual
  model = build_model(config)
  mixture = _audio(batch=2, time=1024, channels=1, seed=1)
  params = model.init(jax.random.key(0), mixture, jnp.ones((2,)), mixture)['params']
  network = sampler.model_network(model)
  settings = sampler.SamplerSettings.from_config(config)
  assert settings.target == 'residual' and settings.data_scale == 10.0
  sampled = sampler.compiled_sampler(network, settings)(params, mixture, jax.random.key(1))
  direct = sampler.compiled_sampler(network, sampler.SamplerSettings.from_config(config, steps=0))(
      params, mixture, jax.random.key(1))
  np.testing.assert_allclose(sampled, direct, atol=1e-6)
  assert float(jnp.max(jnp.abs(direct))) > 1e-3
  vocals = _audio(batch=2, time=1024, channels=1, seed=2)
  batch = {'vocals': vocals, 'mixture': mixture}
  loss = step_lib.make_loss_fn(model, config)(params, batch, jax.random.key(3))[1]
  # A zero head predicts x0_hat = 0, so v_hat = alpha x_sigma / beta; recompute the loss from that by hand.
  keys = step_lib.example_keys(jax.random.key(3), 2, None)
  sigma, noise = step_lib.draw_sigma_and_noise(keys, (1024, 1))
  residual = 10.0 * vocals - model.apply({'params': params}, 10.0 * mixture, method='condition').reconstruction_estimate
  x_sigma = diffusion.add_noise(residual, noise, sigma)
  alpha, beta = diffusion.alpha_beta(sigma)
  v_hat = alpha[:, None, None] * x_sigma / beta[:, None, None]
  error = jnp.mean((v_hat - diffusion.v_target(residual, noise, sigma)) ** 2, axis=(1, 2))
  expected = jnp.mean(error * diffusion.loss_weight(sigma, 'min_snr', 5.0))
  np.testing.assert_allclose(loss['v_mse'], expected, rtol=1e-4)


def test_min_snr_weighting_against_the_formula():
  sigma = np.array([0.05, 0.3, 0.5, 0.8, 1.0])
  alpha, beta = np.cos(np.pi * sigma / 2), np.sin(np.pi * sigma / 2)
  snr = alpha ** 2 / beta ** 2
  np.testing.assert_allclose(diffusion.loss_weight(jnp.asarray(sigma, jnp.float32), 'min_snr', 5.0),
                             np.minimum(snr, 5.0) / (1 + snr), atol=1e-6)
  np.testing.assert_array_equal(diffusion.loss_weight(jnp.asarray(sigma), 'uniform'), np.ones(5))
  # The weighted v error equals min(SNR, gamma) times the x0 error of the same estimate.
  rng = np.random.default_rng(0)
  x0, noise, v_err = (rng.normal(size=(5, 8, 1)) for _ in range(3))
  x_sigma = alpha[:, None, None] * x0 + beta[:, None, None] * noise
  v_true = alpha[:, None, None] * noise - beta[:, None, None] * x0
  x0_err = x0 - (alpha[:, None, None] * x_sigma - beta[:, None, None] * (v_true + v_err))
  weighted_v = (np.minimum(snr, 5.0) / (1 + snr)) * np.mean(v_err ** 2, axis=(1, 2))
  np.testing.assert_allclose(weighted_v, np.minimum(snr, 5.0) * np.mean(x0_err ** 2, axis=(1, 2)), rtol=1e-9)


def test_config_checks_for_the_spectral_kinds():
  with pytest.raises(ConfigError, match='model.kind=mask'):
    load_config('mir1k_mask', ['--config.sampler.steps=4'])
  with pytest.raises(ConfigError, match='n_fft'):
    load_config('mir1k_spectral', ['--config.model.spectral.n_fft=1000'])
  with pytest.raises(ConfigError, match='data.segment'):
    load_config('mir1k_spectral', ['--config.data.segment=1000'])
  with pytest.raises(ConfigError, match='model.kind'):
    load_config('mir1k_spectral', ['--config.model.kind=image'])
  with pytest.raises(ConfigError, match='loss_weighting'):
    load_config('mir1k_spectral', ['--config.diffusion.loss_weighting=snr'])
  with pytest.raises(ConfigError, match='diffusion.reconstruction_loss'):
    load_config('mir1k_mask', ['--config.diffusion.reconstruction_loss=l1'])


def _export(folder, config, params):
  """Writes an exported model (config.json + params.msgpack) the way `export_for_inference` lays it out."""
  files.write_atomically(folder / inference.PARAMS_FILE, flax.serialization.msgpack_serialize(params))
  inference.save_config(folder, config)


def test_a_frozen_conditioner_from_a_trained_mask_model_stays_fixed_while_the_generator_learns(tmp_path):
  baseline_config = tiny_spectral('mask')
  baseline = build_model(baseline_config)
  mixture = _audio(batch=4, time=1024, channels=1)
  baseline_params = baseline.init(jax.random.key(5), mixture, jnp.ones((4,)), mixture)['params']
  _export(tmp_path / 'baseline', baseline_config, jax.device_get(baseline_params))

  config = tiny_spectral('refiner', **{'optim.peak_lr': 1e-2, 'optim.weight_decay': 0.1})
  config.model.spectral.conditioner_from = str(tmp_path / 'baseline')
  config = validate(config)
  model = build_model(config)
  state = jax.jit(lambda rng: state_lib.create_train_state(model, config, rng))(jax.random.key(0))
  source_config, conditioner = inference.pretrained_conditioner(str(tmp_path / 'baseline'))
  loop.check_conditioner_units(config, source_config, 'baseline')
  state = state_lib.with_conditioner(state, conditioner, 'baseline')
  train_step = jax.jit(step_lib.make_train_step(model, config))
  batch = {'vocals': np.asarray(mixture) * 0.5, 'mixture': np.asarray(mixture)}
  generator_before = jax.device_get(state.params['generator'])
  for step in range(3):
    state, _ = train_step(state, batch, jax.random.key(step))
  for tree in (state.params, state.ema_params):  # not even weight decay reaches it.
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(tree['conditioner']),
                 jax.device_get(baseline_params['conditioner']))
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), jax.device_get(state.params['generator']),
                         generator_before)
  assert all(jax.tree.leaves(changed))
  # Its direct estimate is the baseline's own, though its network runs at data_scale 10 and the baseline's at 1.
  scale = config.diffusion.data_scale
  assert scale == 10 and baseline_config.diffusion.data_scale == 1
  np.testing.assert_allclose(sampler.model_network(model).estimate(state.params, scale * mixture)[1] / scale,
                             sampler.model_network(baseline).estimate(baseline_params, mixture)[1], atol=1e-6)
  config.model.spectral.conditioner_data_scale = 10.0
  with pytest.raises(ConfigError, match='conditioner_data_scale=10 but baseline was trained at 1'):
    loop.check_conditioner_units(config, source_config, 'baseline')


def test_a_mask_model_from_a_trained_one_starts_as_that_model(tmp_path):
  source_config = tiny_spectral('mask', **{'data.channels': 1})
  mixture = _audio(batch=1, time=1024, channels=1)
  model = build_model(source_config)
  source_params = model.init(jax.random.key(5), mixture, jnp.ones((1,)), mixture)['params']
  _export(tmp_path / 'source', source_config, jax.device_get(source_params))
  config = tiny_spectral('mask', **{'data.channels': 1})
  state = state_lib.create_train_state(model, config, jax.random.key(0))
  assert loop.initialised_from_source(state, config) is state  # no source: the random initialisation.
  config.model.spectral.conditioner_from = str(tmp_path / 'source')
  tuned = loop.initialised_from_source(state, validate(config))
  for tree in (tuned.params, tuned.ema_params):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(tree), jax.device_get(source_params))
  with pytest.raises(ConfigError, match='would train nothing'):
    load_config('mir1k_mask', [f'--config.model.spectral.conditioner_from={tmp_path / "source"}',
                               '--config.model.spectral.freeze_conditioner=True'])


def test_the_generator_that_sees_the_mixture_reads_its_spectrum_and_the_mask():
  config = tiny_spectral('spectral')
  config.model.spectral.residual = False
  x, mixture = _audio(batch=1, time=1024, channels=1), _audio(batch=1, time=1024, channels=1, seed=1)
  shapes = {}
  for sees in (False, True):
    config.model.spectral.generator_sees_mixture = sees
    params = build_model(config).init(jax.random.key(0), x, jnp.ones((1,)), mixture)['params']
    shapes[sees] = params['generator']['input']['kernel'].shape[0]
  assert shapes[True] - shapes[False] == 2 * (N_FFT // 2 + 1)  # log1p|M| and the mask, one channel.


def test_a_frozen_conditioner_needs_a_source_that_matches():
  with pytest.raises(ConfigError, match='conditioner_from'):
    load_config('mir1k_refiner', ['--config.model.spectral.conditioner_from='])
  config = tiny_spectral('refiner')
  model = build_model(config)
  state = jax.eval_shape(lambda rng: state_lib.create_train_state(model, config, rng), jax.random.key(0))
  wrong = jax.tree.map(lambda leaf: np.zeros(leaf.shape[:-1] + (leaf.shape[-1] + 1,)), state.params['conditioner'])
  with pytest.raises(ConfigError, match='model.spectral.conditioner_from=elsewhere: its conditioner does not match'):
    state_lib.with_conditioner(state, wrong, 'elsewhere')
