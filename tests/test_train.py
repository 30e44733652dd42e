"""Unit tests of diffvox_jax.train with a tiny stand-in model and batch stream (fast, in-process).

The stand-in model has the Diff-DMX call signature `(x_sigma, sigma, mixture) -> (v_hat, Conditioning)`; the
end-to-end tests with the real model, the real input pipeline and real processes are in `test_train_e2e.py`.
"""

import functools
import json
import math
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stand_ins import (
  BATCH,
  CHANNELS,
  SEGMENT,
  StandInConditioning,
  StandInModel,
  StandInStream,
  compiled_functions,
  run_steps,
  tiny_config,
)

from diffvox_jax import config as config_lib
from diffvox_jax import inference
from diffvox_jax.models import build_model
from diffvox_jax.train import checkpoint, loop, optimizer, parallel, step
from diffvox_jax.train import state as state_lib


def assert_trees_close(a, b, **tolerances):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerances), a, b)


def assert_same_training(state, losses, expected_state, expected_losses):
  """Two runs over the same batches agree: losses, parameters, EMA and optimizer state (float32 tolerances)."""
  np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
  assert_trees_close(state.params, expected_state.params, rtol=1e-5, atol=1e-6)
  assert_trees_close(state.ema_params, expected_state.ema_params, rtol=1e-5, atol=1e-6)
  assert_trees_close(state.opt_state, expected_state.opt_state, rtol=1e-4, atol=1e-9)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
  config = tiny_config('optim.peak_lr=1e-3', 'optim.warmup_steps=10', 'train.num_steps=110',
                       'optim.end_lr_factor=0.1')
  schedule = optimizer.learning_rate_schedule(config)
  for count in (0, 5, 10, 35, 60, 110, 200):
    if count <= 10:
      expected = 1e-3 * count / 10
    else:
      progress = min(count - 10, 100) / 100
      expected = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress))
    assert float(schedule(count)) == pytest.approx(expected, rel=1e-5, abs=1e-9), count


def test_first_step_matches_float64_recomputation_of_noise_loss_adamw_and_ema():
  config = tiny_config('optim.warmup_steps=0', 'optim.peak_lr=1e-2', 'optim.grad_clip=0.5',
                       'optim.weight_decay=0.1', 'diffusion.latent_weight=0.5', 'diffusion.reconstruction_weight=2.0')
  model, rng = StandInModel(), jax.random.key(7)
  state = state_lib.create_train_state(model, config, jax.random.key(0))
  batch = next(StandInStream())
  new_state, metrics = jax.jit(step.make_train_step(model, config))(state, batch, rng)

  # The documented key scheme: fold_in(rng, step), then fold_in(., example index), split -> (sigma, noise).
  step_key = jax.random.fold_in(rng, 0)
  sigma, noise = [], []
  for index in range(BATCH):
    sigma_key, noise_key = jax.random.split(jax.random.fold_in(step_key, index))
    sigma.append(jax.random.uniform(sigma_key, ()))
    noise.append(jax.random.normal(noise_key, (SEGMENT, CHANNELS)))
  sigma, noise = np.array(sigma, np.float64), np.array(noise, np.float64)
  vocals = batch['vocals'].astype(np.float64)
  alpha, beta = np.cos(np.pi * sigma / 2)[:, None, None], np.sin(np.pi * sigma / 2)[:, None, None]
  x_sigma, v_true = alpha * vocals + beta * noise, alpha * noise - beta * vocals

  def loss(params):
    v_hat, aux = model.apply({'params': params}, jnp.asarray(x_sigma, jnp.float32), jnp.asarray(sigma, jnp.float32),
                             jnp.asarray(batch['mixture']))
    return (jnp.mean((v_hat - v_true) ** 2) + 0.5 * jnp.mean(jnp.sum((aux.latent_estimate - vocals) ** 2, -1))
            + 2.0 * jnp.mean(jnp.sum((aux.reconstruction_estimate - vocals) ** 2, -1)))

  expected_loss, grads = jax.value_and_grad(loss)(state.params)
  assert float(metrics['loss']) == pytest.approx(float(expected_loss), rel=1e-5)
  grads = jax.tree.map(lambda g: np.asarray(g, np.float64), grads)
  grad_norm = math.sqrt(sum(float(np.sum(g ** 2)) for g in jax.tree.leaves(grads)))
  assert float(metrics['grad_norm']) == pytest.approx(grad_norm, rel=1e-5)
  assert float(metrics['learning_rate']) == pytest.approx(1e-2)
  scale = min(1.0, 0.5 / grad_norm)

  def adamw_first_step(p, g):  # bias-corrected moments of one step are g and g**2
    g = g * scale
    return p - 1e-2 * (g / (np.abs(g) + config.optim.eps) + 0.1 * p)

  expected_params = jax.tree.map(adamw_first_step, jax.tree.map(np.float64, jax.device_get(state.params)), grads)
  assert_trees_close(new_state.params, expected_params, rtol=1e-4, atol=1e-6)
  expected_ema = jax.tree.map(lambda old, new: 0.9 * old + 0.1 * new, state.params, new_state.params)
  assert_trees_close(new_state.ema_params, expected_ema, rtol=1e-6, atol=1e-7)
  assert int(new_state.step) == 1


class BFloat16StandIn(nn.Module):
  """Computes and even stores its parameters in bfloat16; training must keep float32 master weights."""

  @nn.compact
  def __call__(self, x_sigma, sigma, mixture):
    conv = lambda features: nn.Conv(features, (3,), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)  # noqa: E731
    hidden = nn.silu(conv(8)(jnp.concatenate([x_sigma, mixture], axis=-1)) * sigma[:, None, None])
    estimate = conv(CHANNELS)(hidden)
    return estimate, StandInConditioning((), estimate, estimate)


def test_bfloat16_compute_keeps_float32_master_weights():
  config = tiny_config('optim.warmup_steps=0')
  model = BFloat16StandIn()
  state = state_lib.create_train_state(model, config, jax.random.key(0))
  new_state, metrics = jax.jit(step.make_train_step(model, config))(state, next(StandInStream()), jax.random.key(1))
  for tree in (new_state.params, new_state.ema_params):
    assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
  assert metrics['loss'].dtype == jnp.float32 and np.isfinite(float(metrics['loss']))
  # Updates smaller than a bfloat16 ulp of the weight (lr 1e-3 against weights ~0.3) still land in the masters.
  def below_bfloat16_resolution(new, old):
    new, old = np.asarray(new), np.asarray(old)
    return (new != old) & (new.astype(jnp.bfloat16) == old.astype(jnp.bfloat16))

  assert any(below_bfloat16_resolution(new, old).any() for new, old in
             zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params), strict=True))


def test_two_devices_give_the_same_parameters_as_one_device():
  assert len(jax.devices()) >= 2, 'tests/conftest.py fakes two CPU devices'
  stream = StandInStream()
  batches = [next(stream) for _ in range(4)]
  one, one_losses = run_steps(batches, devices=1)
  two, two_losses = run_steps(batches, devices=2)
  assert_same_training(two, two_losses, one, one_losses)
  # The parameters did move (the comparison is not between two initial states).
  initial = compiled_functions((), 1)[2](loop.run_keys(0)[0])
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
           zip(jax.tree.leaves(one.params), jax.tree.leaves(initial.params), strict=True)]
  assert min(moved) > 1e-4


def test_two_steps_per_dispatch_match_one_step_per_dispatch():
  stream = StandInStream()
  batches = [next(stream) for _ in range(4)]
  single, single_losses = run_steps(batches, steps_per_dispatch=1)
  double, double_losses = run_steps(batches, steps_per_dispatch=2)
  assert_same_training(double, double_losses, single, single_losses)


@pytest.mark.parametrize('devices', [1, 2])
def test_gradient_accumulation_equals_one_batch_k_times_larger(devices):
  stream = StandInStream()
  batches = [next(stream) for _ in range(3)]
  whole, whole_losses = run_steps(batches, devices=devices)
  accumulated, accumulated_losses = run_steps(batches, devices=devices, overrides=(
      f'train.accumulation_steps={4 // devices}',))  # micro-batches of one example per device
  assert_same_training(accumulated, accumulated_losses, whole, whole_losses)
  with pytest.raises(config_lib.ConfigError, match='accumulation_steps=3 must be at least 1 and divide'):
    tiny_config('train.accumulation_steps=3')


class ScanStandIn(nn.Module):
  """A running mean over time by `lax.scan` from a constant initial carry, like the blockwise attention."""

  @nn.compact
  def __call__(self, x_sigma, sigma, mixture):
    hidden = nn.Conv(CHANNELS, (3,))(jnp.concatenate([x_sigma, mixture], axis=-1)) * sigma[:, None, None]

    def accumulate(total, frame):
      return 0.9 * total + 0.1 * frame, total

    batch, _, channels = hidden.shape
    _, smoothed = jax.lax.scan(accumulate, jnp.zeros((batch, channels)), hidden.swapaxes(0, 1))
    estimate = smoothed.swapaxes(0, 1)
    return estimate, StandInConditioning((), estimate, estimate)


def test_model_code_unaware_of_the_mesh_runs_under_the_data_parallel_step():
  config, mesh = tiny_config(), parallel.make_mesh()
  state = parallel.create_sharded_state(ScanStandIn(), config, jax.random.key(0), mesh)
  multi_step = parallel.make_parallel_train_step(ScanStandIn(), config, mesh)
  state, metrics = multi_step(state, parallel.stack_and_shard([next(StandInStream())], mesh), jax.random.key(1))
  assert np.isfinite(np.asarray(metrics['loss'])).all() and int(state.step) == 1


def test_batch_size_must_split_over_devices():
  mesh = parallel.make_mesh()
  with pytest.raises(config_lib.ConfigError, match='train.batch_size=3'):
    parallel.check_batch_size(tiny_config('train.batch_size=3'), mesh)
  with pytest.raises(config_lib.ConfigError, match='accumulation_steps=4 does not divide the per-device batch of 2'):
    parallel.check_batch_size(tiny_config('train.batch_size=4', 'train.accumulation_steps=4'), mesh)
  parallel.check_batch_size(tiny_config('train.batch_size=4', 'train.accumulation_steps=2'), mesh)


def test_dispatch_sizes_land_on_checkpoint_and_eval_steps():
  config = tiny_config('train.steps_per_dispatch=4', 'train.checkpoint_every=6', 'train.eval_every=10',
                       'train.num_steps=13')
  steps, sizes = 0, []
  while steps < config.train.num_steps:
    sizes.append(loop.dispatch_size(steps, config))
    steps += sizes[-1]
  assert sizes == [4, 2, 4, 2, 1]  # ends at 4, 6 (checkpoint), 10 (eval), 12 (checkpoint), 13 (end)


@pytest.mark.parametrize('iterator_state', [{'index': 3, 'seeds': [1, 2]}, b'\x00grain\xffbytes'])
def test_checkpoint_restores_state_and_iterator_state_exactly(tmp_path, iterator_state):
  _, mesh, init, _ = compiled_functions((), 2)
  stream = StandInStream()
  trained, _ = run_steps([next(stream) for _ in range(2)])
  trained = jax.device_put(trained, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  manager = checkpoint.make_manager(tmp_path, keep=2)
  assert checkpoint.save_checkpoint(manager, trained, iterator_state) == 2
  manager.wait_until_finished()
  fresh = init(jax.random.key(99))
  restored, restored_iterator_state = checkpoint.restore_checkpoint(manager, fresh)
  manager.close()
  assert restored_iterator_state == iterator_state
  assert int(restored.step) == 2
  for name in ('params', 'ema_params', 'opt_state'):
    jax.tree.map(np.testing.assert_array_equal, getattr(restored, name), getattr(trained, name))
  assert restored.params['Conv_0']['kernel'].sharding.is_fully_replicated


def test_load_for_inference_reads_workdirs_and_exports(tmp_path):
  config = tiny_config()
  stream = StandInStream()
  trained, _ = run_steps([next(stream) for _ in range(2)])
  inference.save_config(tmp_path / 'run', config)
  manager = checkpoint.make_manager(tmp_path / 'run')
  checkpoint.save_checkpoint(manager, jax.device_put(trained, jax.devices()[0]), {'index': 2})
  manager.close()

  loaded_config, ema = inference.load_for_inference(tmp_path / 'run')
  assert config_lib.to_json(loaded_config) == config_lib.to_json(config)
  jax.tree.map(np.testing.assert_array_equal, ema, trained.ema_params)
  _, raw = inference.load_for_inference(tmp_path / 'run', use_ema=False)
  jax.tree.map(np.testing.assert_array_equal, raw, trained.params)

  assert inference.export_for_inference(tmp_path / 'run', tmp_path / 'export') == 2
  assert sorted(p.name for p in (tmp_path / 'export').iterdir()) == ['config.json', 'params.msgpack']
  exported_config, exported = inference.load_for_inference(tmp_path / 'export')
  assert exported_config == loaded_config
  jax.tree.map(np.testing.assert_array_equal, exported, trained.ema_params)

  with pytest.raises(inference.CheckpointError, match='config.json'):
    inference.load_for_inference(tmp_path / 'missing')
  inference.save_config(tmp_path / 'empty', config)
  with pytest.raises(inference.CheckpointError, match='neither an exported model'):
    inference.load_for_inference(tmp_path / 'empty')


def test_training_writes_config_scalars_and_checkpoints_then_resumes_without_work(tmp_path):
  config = tiny_config('train.num_steps=4', 'train.eval_every=2', 'train.eval_batches=1')
  eval_data = [next(StandInStream(batch=BATCH))]
  state = loop.train_and_evaluate(config, tmp_path, model=StandInModel(), train_data=StandInStream(),
                                  eval_data=eval_data)
  assert int(state.step) == 4
  assert config_lib.from_json((tmp_path / 'config.json').read_text()) == config
  assert checkpoint.make_manager(tmp_path, create=False).all_steps() == [2, 4]
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  # A second call finds the finished run and does nothing.
  again = loop.train_and_evaluate(config, tmp_path, model=StandInModel(), train_data=StandInStream(),
                                  eval_data=eval_data)
  jax.tree.map(np.testing.assert_array_equal, again.params, state.params)


def test_the_synchronous_loop_waits_for_each_dispatch_and_trains_the_same(monkeypatch, tmp_path):
  calls, real_wait = [], jax.block_until_ready
  monkeypatch.setattr(jax, 'block_until_ready', lambda tree: calls.append(1) or real_wait(tree))
  params, waits = {}, {}
  for prefetch in (True, False):
    calls.clear()
    config = tiny_config('train.num_steps=6', 'train.steps_per_dispatch=2', f'train.prefetch_to_device={prefetch}')
    params[prefetch] = loop.train_and_evaluate(config, tmp_path / str(prefetch), model=StandInModel(),
                                               train_data=StandInStream()).params
    waits[prefetch] = len(calls)
  assert waits[False] - waits[True] == 3  # one wait per dispatch of 2 steps
  jax.tree.map(np.testing.assert_array_equal, params[False], params[True])


def test_nan_batch_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_config('train.num_steps=8', 'train.checkpoint_every=2')
  # Batch index 4 feeds the 5th update: steps 1 to 4 are good (checkpoints at 2 and 4), step 5 is not.
  with pytest.raises(loop.TrainingDiverged, match=r'non-finite loss at step 5 .*last good checkpoint \(step 4\)'):
    loop.train_and_evaluate(config, tmp_path, model=StandInModel(), train_data=StandInStream(nan_at=4))
  assert checkpoint.make_manager(tmp_path, create=False).all_steps() == [2, 4]
  params = inference.load_for_inference(tmp_path, use_ema=False)[1]
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


def test_missing_data_directory_is_a_clear_error(tmp_path):
  config = tiny_config(f'data.data_dir={tmp_path / "nowhere"}')
  with pytest.raises(FileNotFoundError, match='nowhere does not exist.*diffvox prepare'):
    loop.check_data_dir(config)


def test_loss_terms_use_the_configured_weights():
  config = tiny_config('diffusion.v_weight=0.0', 'diffusion.latent_weight=0.0')
  state = state_lib.create_train_state(StandInModel(), config, jax.random.key(0))
  loss_fn = step.make_loss_fn(StandInModel(), config)
  total, terms = loss_fn(state.params, next(StandInStream()), jax.random.key(3))
  assert float(total) == pytest.approx(float(terms['reconstruction_mse']), rel=1e-6)
  assert float(terms['v_mse']) > 0 and float(terms['latent_mse']) > 0
  assert set(terms) == {'loss', 'v_mse', 'latent_mse', 'reconstruction_mse'}


def test_a_config_saved_before_a_field_existed_loads_with_the_fields_base_value():
  saved = json.loads(config_lib.to_json(config_lib.load_config('mir1k_spectral', ['--config.sampler.eta=0.3'])))
  del saved['sampler']['method'], saved['model']['spectral']['conditioner_from']
  loaded = config_lib.from_json(json.dumps(saved))
  assert loaded.sampler.method == 'ddim' and loaded.model.spectral.conditioner_from == ''
  assert loaded.sampler.eta == 0.3 and loaded.model.kind == 'spectral'  # what was saved stays.


def test_stop_signals_turn_sighup_into_a_stop_and_restore_the_handlers():
  """A dropped ssh session (SIGHUP) stops training like SIGTERM; the first signal wins; handlers come back."""
  previous = signal.getsignal(signal.SIGHUP)
  with loop.StopSignals() as signals:
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.agreed() == signal.SIGHUP
  assert signal.getsignal(signal.SIGHUP) is previous


def test_hosts_agree_on_a_stop_only_when_polled(monkeypatch):
  """With several processes the agreement is a collective (a barrier): it runs only at poll steps."""
  gathered = []
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(loop.multihost_utils, 'process_allgather',
                      lambda value: gathered.append(int(value)) or np.array([int(value), signal.SIGTERM]))
  signals = loop.StopSignals()
  assert signals.agreed(poll=False) is None and gathered == []
  assert signals.agreed(poll=True) == signal.SIGTERM and gathered == [0]  # the other host received SIGTERM
  with pytest.raises(config_lib.ConfigError, match='stop_poll_every'):
    tiny_config('train.stop_poll_every=0')


@pytest.mark.slow
def test_rematerialisation_gives_the_same_loss_and_gradients():
  """`model.remat` changes what the backward pass stores, not what it computes (float32, tight tolerance)."""
  overrides = ('model.factors=(8,)', 'model.generator.blocks=(1,)', 'model.generator.attention=(True,)',
               'model.generator.inject=(True,)', 'model.conditioner.attention=(True,)',
               'model.conditioner.transformer_layers=1', 'model.generator.channels=4', 'model.generator.groups=2',
               'model.conditioner.channels=4', 'model.conditioner.groups=2', 'data.segment=1024', 'train.batch_size=2')
  plain = config_lib.load_config('cpu_tiny', overrides)
  remat = config_lib.load_config('cpu_tiny', overrides + ("model.remat='nothing_saveable'",))
  params = state_lib.create_train_state(build_model(plain), plain, jax.random.key(0)).params
  rng = np.random.default_rng(0)
  batch = {key: jnp.asarray(0.1 * rng.standard_normal((2, 1024, 2)), jnp.float32) for key in ('vocals', 'mixture')}
  fast_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
  results = [fast_jit(jax.grad(step.make_loss_fn(build_model(config), config), has_aux=True))(
      params, batch, jax.random.key(3)) for config in (plain, remat)]
  (plain_grads, plain_terms), (remat_grads, remat_terms) = results
  np.testing.assert_allclose(remat_terms['loss'], plain_terms['loss'], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(plain_grads), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  with pytest.raises(config_lib.ConfigError, match='model.remat'):
    config_lib.load_config('cpu_tiny', ("model.remat='save_everything_please'",))


def test_a_gs_workdir_reaches_orbax_and_every_writer_unmangled(monkeypatch, tmp_path):
  """`gs://bucket/run` with local stand-ins for Cloud Storage: an fsspec 'gs' filesystem (what epath uses for
  gs:// without TensorFlow), a tensorboardX 'gs' writer, and orbax's manager opened on the local twin folder."""
  import fsspec
  import orbax.checkpoint as ocp
  from fsspec.implementations.dirfs import DirFileSystem
  from fsspec.implementations.local import LocalFileSystem
  from tensorboardX import record_writer

  bucket = tmp_path / 'bucket'
  bucket.mkdir()

  def local(uri: str) -> str:
    assert uri.startswith('gs://bucket/'), uri
    return str(tmp_path / uri[len('gs://'):])

  class StandInStorage(DirFileSystem):
    protocol, cachable = 'gs', False

    def __init__(self, finalize_on_close=True, **kwargs):
      del finalize_on_close  # a gcsfs option
      super().__init__(path=str(tmp_path), fs=LocalFileSystem(), **kwargs)

    def _join(self, path):  # epath hands it full URIs
      strip = lambda p: p[len('gs://'):] if p.startswith('gs://') else p
      return super()._join([strip(p) for p in path] if isinstance(path, list) else strip(path))

  class StandInEvents:
    def open(self, path):
      os.makedirs(os.path.dirname(local(path)), exist_ok=True)
      return open(local(path), 'wb')

    def directory_check(self, path):
      del path

  from etils.epath import backend

  for protocol in ('gs', 'gcs'):
    fsspec.register_implementation(protocol, StandInStorage, clobber=True)
  backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches the filesystem per protocol
  request_cleanup = backend.fsspec_backend._get_filesystem.cache_clear
  monkeypatch.setitem(record_writer.REGISTERED_FACTORIES, 'gs', StandInEvents())
  opened, real_manager = [], ocp.CheckpointManager
  monkeypatch.setattr(ocp, 'CheckpointManager',
                      lambda directory, **kwargs: opened.append(str(directory)) or real_manager(local(str(directory)),
                                                                                                **kwargs))
  workdir = 'gs://bucket/run'
  config = tiny_config('train.num_steps=2', 'train.checkpoint_every=2')
  loop.train_and_evaluate(config, workdir, model=StandInModel(), train_data=StandInStream())
  assert opened and set(opened) == {'gs://bucket/run/checkpoints'}
  run = bucket / 'run'
  assert json.loads((run / inference.CONFIG_FILE).read_text())['train']['num_steps'] == 2
  assert [record['step'] for record in map(json.loads, (run / loop.METRICS_FILE).read_text().splitlines())] == [1, 2]
  assert list((run / 'tensorboard').glob('events.out.tfevents.*'))
  assert inference.latest_step(workdir) == 2
  inference.export_params('gs://bucket/export', config, {'w': np.ones(3, np.float32)})
  assert (bucket / 'export' / inference.PARAMS_FILE).is_file()
  assert inference.read_config('gs://bucket/export').train.num_steps == 2
  request_cleanup()
