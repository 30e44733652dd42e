"""End-to-end training tests: the real Diff-DMX model (reduced cpu_tiny), the real input pipeline on a tiny
synthetic dataset, and real processes (`diffvox train`, SIGKILL, SIGTERM, two-process multi-host).

Every process shares one persistent XLA compilation cache, so only the first one pays for compiling the model.
"""

import json
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import soundfile as sf

from diffvox_jax import inference, plots
from diffvox_jax.train import checkpoint, loop

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parent.parent
TESTS = pathlib.Path(__file__).resolve().parent
NUM_STEPS = 8
# cpu_tiny reduced to two levels and 4 channels (compiles in about a minute on 2 cores); the code paths are the
# paper model's: generator, conditioner with attention and transformer, injection, both auxiliary heads, and the
# blockwise attention that paper-size sequences use on a CPU (256 tokens in blocks of 128).
SMALL_MODEL = (
    'data.segment=1024', 'train.batch_size=4', 'model.factors=(4, 4)', 'model.generator.channels=4',
    'model.generator.groups=2', 'model.generator.blocks=(1, 1)', 'model.generator.attention=(False, True)',
    'model.generator.inject=(False, True)', 'model.conditioner.channels=4', 'model.conditioner.groups=2',
    'model.conditioner.attention=(False, True)', 'model.conditioner.transformer_layers=1', 'model.attention_block=128',
    f'train.num_steps={NUM_STEPS}', 'optim.warmup_steps=2', 'optim.peak_lr=5e-3', 'train.checkpoint_every=3',
    'train.keep_checkpoints=10', 'train.log_every=1', 'train.eval_every=4', 'train.eval_batches=1',
    'train.eval_audio_clips=0')  # the validation separation has its own test (test_quality.py)

# Trains in a subprocess with the real pipeline; from batch `pause_at` on it touches `marker`, then either blocks
# (`block`: the test kills it) or slows down (`slow`: the test sends SIGTERM). Exits like `diffvox train`.
PACED_TRAINER = '''
import json, pathlib, sys, time
from diffvox_jax.config import load_config
from diffvox_jax.data import pipeline
from diffvox_jax.train import loop

overrides, workdir, marker, pause_at, mode = json.loads(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3]), \\
    int(sys.argv[4]), sys.argv[5]
config = load_config('cpu_tiny', overrides)


class Paced:
  def __init__(self, inner):
    self.inner, self.count = inner, 0

  def __next__(self):
    if self.count >= pause_at:
      marker.touch()
      time.sleep(3600 if mode == 'block' else 1.0)
    self.count += 1
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


try:
  loop.train_and_evaluate(config, workdir, train_data=Paced(pipeline.train_iterator(config)))
except loop.TrainingInterrupted as error:
  print(error, file=sys.stderr)
  sys.exit(128 + error.signum)
'''

# One real batch repeated: prints the per-step metrics as JSON.
OVERFITTER = '''
import json, sys
import jax
import numpy as np
from diffvox_jax.config import load_config
from diffvox_jax.data import pipeline
from diffvox_jax.models import build_model
from diffvox_jax.train import parallel

config = load_config('cpu_tiny', json.loads(sys.argv[1]))
model, mesh = build_model(config), parallel.make_mesh()
state = parallel.create_sharded_state(model, config, jax.random.key(0), mesh)
multi_step = parallel.make_parallel_train_step(model, config, mesh)
batch = parallel.stack_and_shard([next(pipeline.train_iterator(config))], mesh)
history = []
for _ in range(config.train.num_steps):
  state, metrics = multi_step(state, batch, jax.random.key(1))
  history.append({name: float(value[0]) for name, value in jax.device_get(metrics).items()})
print(json.dumps(history))
'''

# One host of a two-process run on loopback (gloo collectives), two CPU devices each, stand-in model. Modes:
# 'train' runs to the end; 'paced' makes host 0 slow from its 3rd batch on (touching `marker`: the test sends it
# SIGTERM); 'no_data' gives host 1 a missing data folder. Exits like `diffvox train`.
MULTI_HOST_TRAINER = '''
import pathlib, sys, time
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
process_id, port, workdir, mode, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[5], sys.argv[6]
jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2, process_id=process_id)
sys.path.insert(0, sys.argv[4])
from stand_ins import StandInModel, StandInStream, tiny_config
from diffvox_jax.train import loop, parallel


class Paced(StandInStream):
  def __next__(self):
    if self.index >= 2:
      pathlib.Path(marker).touch()
      time.sleep(1.0)
    return super().__next__()


# Host i feeds examples i*2, i*2+1 of each global batch of 4 (see `global_batches` in the test).
stream = (Paced if mode == 'paced' and process_id == 0 else StandInStream)(batch=2, host=process_id)
if mode == 'no_data' and process_id == 1:
  stream = None
config = tiny_config('train.num_steps=6', 'train.checkpoint_every=2', 'train.stop_poll_every=1',
                     f'data.data_dir={workdir}/missing')
try:
  loop.train_and_evaluate(config, workdir, model=StandInModel(), train_data=stream)
except loop.TrainingInterrupted as error:
  print(error, file=sys.stderr)
  sys.exit(128 + error.signum)
except (FileNotFoundError, parallel.StartupFailed) as error:
  print(error, file=sys.stderr)
  sys.exit(3)
'''

# The same 6 global batches of the two hosts, one process with 4 devices: prints the parameter leaves' sums.
FOUR_DEVICE_REFERENCE = '''
import json, sys
import numpy as np
import jax
sys.path.insert(0, sys.argv[1])
from stand_ins import StandInStream, run_steps

hosts = [StandInStream(batch=2, host=0), StandInStream(batch=2, host=1)]
global_batches = []
for _ in range(6):
  parts = [next(stream) for stream in hosts]
  global_batches.append({key: np.concatenate([part[key] for part in parts]) for key in parts[0]})
state, _ = run_steps(global_batches, devices=4, overrides=('train.num_steps=6', 'train.checkpoint_every=2'))
np.savez(sys.argv[2], *jax.tree.leaves(state.params))
'''


def subprocess_env() -> dict[str, str]:
  """The environment of every process started here; it inherits the suite's compilation cache (conftest.py)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
  return env


def diffvox(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'diffvox_jax.cli', *args], env=env, capture_output=True, text=True,
                        timeout=timeout, cwd=REPO)


@pytest.fixture(scope='module')
def synthetic_data(tmp_path_factory) -> pathlib.Path:
  """Three short synthetic songs (one per split) prepared with `diffvox prepare`."""
  data_dir = tmp_path_factory.mktemp('data')
  result = diffvox('prepare', '--dataset', 'synthetic', '--num-songs', '3', '--max-seconds', '6', '--config',
                   'cpu_tiny', '--data-dir', str(data_dir), env=subprocess_env())
  assert result.returncode == 0, result.stderr[-3000:]
  return data_dir


@pytest.fixture(scope='module')
def overrides(synthetic_data) -> list[str]:
  return [*SMALL_MODEL, f'data.data_dir={synthetic_data}']


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory, overrides) -> tuple[pathlib.Path, subprocess.CompletedProcess]:
  """`diffvox train` for NUM_STEPS steps without interruption."""
  workdir = tmp_path_factory.mktemp('straight')
  flags = [f'--config.{override}' for override in overrides]
  result = diffvox('train', '--config', 'cpu_tiny', '--workdir', str(workdir), *flags,
                   env=subprocess_env())
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def read_checkpoint(workdir: pathlib.Path, step: int) -> dict:
  """Every item of a checkpoint as numpy trees (targets from the saved metadata) plus the iterator files."""
  manager = checkpoint.make_manager(workdir, create=False)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  args = {}
  for item in checkpoint.STATE_ITEMS:
    target = jax.tree.map(lambda array: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=device),
                          manager.item_metadata(step)[item])
    args[item] = ocp.args.StandardRestore(target)
  restored = jax.device_get(dict(manager.restore(step, args=ocp.args.Composite(**args))))
  manager.close()
  iterator_dir = workdir / inference.CHECKPOINT_DIR / str(step) / checkpoint.ITERATOR_ITEM
  restored['iterator_files'] = {path.name: path.read_text() for path in iterator_dir.glob('process_*.json')}
  return restored


def assert_checkpoints_identical(a: dict, b: dict) -> None:
  assert a['iterator_files'] == b['iterator_files']
  for item in checkpoint.STATE_ITEMS:
    leaves_a, leaves_b = jax.tree.leaves(a[item]), jax.tree.leaves(b[item])
    assert len(leaves_a) == len(leaves_b) > 0
    for leaf_a, leaf_b in zip(leaves_a, leaves_b, strict=True):
      np.testing.assert_array_equal(leaf_a, leaf_b, err_msg=item)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 600) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    if process.poll() is not None:
      raise AssertionError(f'the trainer exited ({process.returncode}) before {what}: {process.stderr.read()[-3000:]}')
    if time.monotonic() > deadline:
      process.kill()
      raise AssertionError(f'timed out waiting for {what}')
    time.sleep(0.2)


def start_paced_trainer(tmp_path, overrides, workdir, pause_at: int, mode: str):
  script, marker = tmp_path / 'paced_trainer.py', tmp_path / 'paused'
  script.write_text(PACED_TRAINER)
  process = subprocess.Popen(
      [sys.executable, str(script), json.dumps(overrides), str(workdir), str(marker), str(pause_at), mode],
      env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
  return process, marker


def event_tags(folder: pathlib.Path) -> set[str]:
  """Scalar tags in TensorBoard event files (TFRecord framing: length, crc, Event proto, crc)."""
  from tensorboardX.proto import event_pb2

  tags = set()
  for path in folder.glob('events.out.tfevents.*'):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      tags.update(value.tag for value in event.summary.value)
      offset += 12 + length + 4
  return tags


def test_diffvox_train_runs_end_to_end_on_synthetic_songs(straight_run):
  workdir, result = straight_run
  assert 'examples_per_s' in result.stderr and 'steps_per_s' in result.stderr
  assert 'step 4 eval: latent_mse=' in result.stderr and 'step 8 eval_ema: latent_mse=' in result.stderr
  assert inference.latest_step(workdir) == NUM_STEPS
  tags = event_tags(workdir / 'tensorboard')
  logged = plots.read_metrics(workdir / loop.METRICS_FILE)  # the same scalars as JSON lines.
  for tag in ('train/loss', 'train/v_mse', 'train/latent_mse', 'train/reconstruction_mse', 'train/grad_norm',
              'train/learning_rate', 'train/examples_per_s', 'eval/loss', 'eval_ema/reconstruction_mse'):
    assert tag in tags and tag in logged
  assert logged['train/loss'][-1][0] == NUM_STEPS
  config, params = inference.load_for_inference(workdir)
  assert config.train.num_steps == NUM_STEPS and config.model.factors == (4, 4)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


def test_separating_with_a_training_workdir_is_quiet(straight_run, tmp_path):
  workdir, _ = straight_run
  song = tmp_path / 'song.wav'
  sf.write(song, np.random.default_rng(0).uniform(-0.3, 0.3, (8000, 2)).astype(np.float32), 16000)
  result = diffvox('separate', str(song), '--checkpoint', str(workdir), '-o', str(tmp_path / 'out'), '--steps', '1',
                   '--bits', '32f', env=subprocess_env())  # float: no level warnings either
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.strip() == '', result.stderr[-3000:]  # no orbax, tfds or JAX lines without --verbose.


def test_missing_dataset_is_one_clear_line(tmp_path):
  result = diffvox('train', '--config', 'cpu_tiny', '--workdir', str(tmp_path / 'run'),
                   f'--config.data.data_dir={tmp_path / "nowhere"}', env=subprocess_env())
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(f'diffvox: data directory {tmp_path / "nowhere"} does not')


def test_sigkill_after_a_checkpoint_then_restart_resumes_exactly(tmp_path, overrides, straight_run):
  straight, _ = straight_run
  workdir = tmp_path / 'killed'
  process, marker = start_paced_trainer(tmp_path, overrides, workdir, pause_at=4, mode='block')
  # Steps 1-3, checkpoint 3, step 4, then it blocks fetching the 5th batch.
  wait_for(lambda: marker.exists() and inference.latest_step(workdir) == 3, process, 'checkpoint 3')
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  process.stderr.close()
  process.stdout.close()
  assert inference.latest_step(workdir) == 3

  result = diffvox('train', '--workdir', str(workdir), env=subprocess_env())
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming at step 3' in result.stderr
  for step in (6, NUM_STEPS):
    assert_checkpoints_identical(read_checkpoint(workdir, step), read_checkpoint(straight, step))


def test_sigterm_saves_a_complete_checkpoint_before_exiting(tmp_path, overrides, straight_run):
  del straight_run  # only for its compilation cache
  workdir = tmp_path / 'terminated'
  process, marker = start_paced_trainer(tmp_path, overrides, workdir, pause_at=4, mode='slow')
  wait_for(marker.exists, process, 'the 5th batch')
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  step = inference.latest_step(workdir)
  assert f'stopped by SIGTERM at step {step}; checkpoint saved' in stderr
  assert 4 <= step < NUM_STEPS  # stopped early, after the step it was in (the 5th batch is fetched during step 4)
  saved = read_checkpoint(workdir, step)  # every item restores
  assert int(saved['optimizer']['step']) == step
  assert list(saved['iterator_files']) == ['process_0-of-1.json']
  iterator_state = checkpoint.decode_iterator_state(saved['iterator_files']['process_0-of-1.json'])
  assert iterator_state == {'next_index': step}  # grain's position: one batch per step consumed


def test_loss_decreases_when_overfitting_one_batch(tmp_path, overrides, straight_run):
  del straight_run  # only for its compilation cache
  script = tmp_path / 'overfit.py'
  script.write_text(OVERFITTER)
  result = subprocess.run([sys.executable, str(script), json.dumps(overrides)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=900, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  history = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(history) == NUM_STEPS
  for term in ('latent_mse', 'reconstruction_mse'):  # deterministic given the parameters: strictly comparable
    assert history[-1][term] < 0.7 * history[0][term], (term, [h[term] for h in history])
  first, last = np.mean([h['loss'] for h in history[:3]]), np.mean([h['loss'] for h in history[-3:]])
  assert last < 0.8 * first, [h['loss'] for h in history]


def start_hosts(tmp_path, workdir, mode: str) -> list[subprocess.Popen]:
  script, port = tmp_path / 'multi_host.py', str(20000 + (os.getpid() + len(mode)) % 20000)
  script.write_text(MULTI_HOST_TRAINER)
  return [subprocess.Popen([sys.executable, str(script), str(i), port, str(workdir), str(TESTS), mode,
                            str(tmp_path / 'paused')], env=subprocess_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=REPO) for i in range(2)]


def finish(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
  """(exit status, stderr) of each process once it has ended."""
  outcomes = []
  for process in processes:
    _, stderr = process.communicate(timeout=600)
    outcomes.append((process.returncode, stderr))
  return outcomes


def test_two_hosts_of_two_devices_stop_resume_and_train_like_one_host_with_four(tmp_path):
  workdir = tmp_path / 'multi'
  processes = start_hosts(tmp_path, workdir, 'paced')
  wait_for((tmp_path / 'paused').exists, processes[0], 'the 3rd batch of host 0')
  processes[0].send_signal(signal.SIGTERM)  # one host only: they agree to stop at the same step
  outcomes = finish(processes)
  stopped = [re.search(r'stopped by SIGTERM at step (\d+)', stderr) for _, stderr in outcomes]
  assert [code for code, _ in outcomes] == [128 + signal.SIGTERM] * 2, outcomes
  assert stopped[0] and stopped[1] and stopped[0][1] == stopped[1][1], outcomes
  step = int(stopped[0][1])
  assert 2 <= step < 6 and inference.latest_step(workdir) == step
  assert sorted(read_checkpoint(workdir, step)['iterator_files']) == ['process_0-of-2.json', 'process_1-of-2.json']

  resumed = finish(start_hosts(tmp_path, workdir, 'train'))  # on both
  assert [code for code, _ in resumed] == [0, 0], resumed
  assert f'resuming at step {step}' in resumed[0][1]  # process 0 reports
  reference = tmp_path / 'reference.npz'
  script = tmp_path / 'reference.py'
  script.write_text(FOUR_DEVICE_REFERENCE)
  env = dict(subprocess_env(), XLA_FLAGS='--xla_force_host_platform_device_count=4')
  result = subprocess.run([sys.executable, str(script), str(TESTS), str(reference)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  single = np.load(reference)
  multi = jax.tree.leaves(read_checkpoint(workdir, 6)['params'])
  assert len(multi) == len(single.files) > 0
  for index, leaf in enumerate(multi):
    np.testing.assert_allclose(leaf, single[f'arr_{index}'], rtol=1e-5, atol=1e-7)


def test_a_host_failing_at_start_up_stops_both_with_its_message(tmp_path):
  outcomes = finish(start_hosts(tmp_path, tmp_path / 'failing', 'no_data'))
  assert [code for code, _ in outcomes] == [3, 3], outcomes
  assert 'missing does not exist' in outcomes[1][1]
  assert 'process 1 failed at start-up: data directory' in outcomes[0][1], outcomes[0][1][-3000:]


def test_device_check_trains_on_the_minutes_left_and_exports_the_ema_weights(tmp_path, overrides,
                                                                              synthetic_data, straight_run):
  """`tools/device_check.py --train-minutes`: the real loop on carried data, then the export `diffvox separate` reads
  (the same model as `straight_run`, so the compilation cache it filled makes this quick)."""
  out = tmp_path / 'out'
  flags = [f'--train-override={override}' for override in overrides if not override.startswith('data.data_dir=')]
  result = subprocess.run([sys.executable, str(REPO / 'tools' / 'device_check.py'), '--dry-run', '--sections', '',
                           '--out', str(out), '--train-minutes', '10', '--train-config', 'cpu_tiny',
                           '--train-data', str(synthetic_data), *flags],
                          env=subprocess_env(), capture_output=True, text=True, timeout=900, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  trained = json.loads((out / 'device_check.json').read_text())['sections']['train']
  assert trained['step'] == NUM_STEPS and trained['stopped'] == 'finished'
  config, params = inference.load_for_inference(out / 'model')
  assert config.model.factors == (4, 4) and all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))
  missing = subprocess.run([sys.executable, str(REPO / 'tools' / 'device_check.py'), '--sections', '', '--out',
                            str(tmp_path / 'again'), '--train-minutes', '1', '--train-data', str(tmp_path / 'none')],
                           env=subprocess_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
  assert missing.returncode == 1
  assert missing.stderr.strip().endswith(f'--train-data {tmp_path / "none"}: no such folder')
