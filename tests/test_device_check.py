"""tools/device_check.py: its dry run on this CPU (every section, a miniature model), and its reference."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'tools'))
import device_check  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
  out = tmp_path_factory.mktemp('device_check')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
  result = subprocess.run([sys.executable, str(REPO / 'tools' / 'device_check.py'), '--dry-run', '--out', str(out),
                           '--budget-s', '3600'], env=env, capture_output=True, text=True, timeout=1200, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return result, json.loads((out / 'device_check.json').read_text())


def test_dry_run_reproduces_the_reference_and_times_every_section(dry_run):
  result, report = dry_run
  correctness = report['sections']['correctness']
  assert correctness['float32']['ok'] and correctness['bfloat16']['ok']
  # The CPU reproduces its own float32 reference to float32 rounding, and bfloat16 differs but not by much.
  assert max(correctness['float32']['errors'].values()) < 1e-5
  assert 1e-4 < correctness['bfloat16']['errors']['sampler'] < device_check.BFLOAT16_TOLERANCE
  sampling = report['sections']['sampling']
  assert [(row['dtype'], row['method']) for row in sampling] == [('float32', 'ddim'), ('float32', 'dpmpp_2m')]
  assert all(row['seconds'] > 0 and row['compile_s'] > 0 and 'error' not in row for row in sampling)
  training = report['sections']['training']
  assert [row['dtype'] for row in training] == ['float32']
  assert all(row['steps_per_s'] > 0 and np.isfinite(row['loss']) and row['flops_per_step'] > 0 for row in training)
  # The memory saver compiles at the full batch (the dry run leaves out remat, which XLA:CPU ignores); accumulating
  # 2 micro-batches needs less than the plain step, and the plain step fits, so it is the one timed.
  savers = training[0]['memory_savers']
  assert set(savers) == {'accum2'} and training[0]['memory_saver'] == 'none'
  assert 0 < savers['accum2'] < training[0]['compiled_bytes_at_requested_batch']
  assert report['skipped'] == []
  last = result.stdout.strip().splitlines()[-1]
  assert last.startswith('correct_float32=ok correct_bfloat16=ok t50_s=')
  assert 't50_bf16_s=nan' in last and last.count('nan') == 1  # the dry run times float32 only.


def test_reference_parameters_are_fixed_and_scaled_by_fan_in():
  config = device_check.load_config('cpu_tiny', device_check.DRY_RUN_MODEL)
  first, second = device_check.reference_params(config), device_check.reference_params(config)
  leaves = [(path, leaf) for path, leaf in device_check.jax.tree_util.tree_leaves_with_path(first)]
  assert all(np.array_equal(a, b) for a, b in zip(device_check.jax.tree.leaves(first),
                                                  device_check.jax.tree.leaves(second), strict=True))
  kernels = [leaf for path, leaf in leaves if 'kernel' in device_check.jax.tree_util.keystr(path)]
  for kernel in kernels:
    fan_in = int(np.prod(kernel.shape[:-1]))
    if kernel.size >= 1000:  # the standard deviation of enough draws is near 1 / sqrt(fan_in).
      assert abs(kernel.std() * np.sqrt(fan_in) - 1.0) < 0.1


def test_a_reference_of_another_model_is_a_clear_error():
  with pytest.raises(SystemExit, match='computed for another model'):
    device_check.relative_error(np.zeros(3), np.zeros(4))
