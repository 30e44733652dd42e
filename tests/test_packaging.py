"""The installed package: a wheel built from the checkout holds every sub-package, the configs inside the package
namespace (no top-level `configs`), the shipped models, and works from outside the repository."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_plain_install_works_outside_the_repository(tmp_path):
  target = tmp_path / 'site'
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target), str(REPO)],
                 check=True, capture_output=True, text=True, timeout=600)
  assert not (target / 'configs').exists()
  packages = {p.parent.relative_to(REPO) for p in (REPO / 'diffvox_jax').rglob('__init__.py')}
  installed = {p.parent.relative_to(target) for p in (target / 'diffvox_jax').rglob('__init__.py')}
  assert packages | {pathlib.Path('diffvox_jax/configs')} == installed
  assert {p.name for p in (target / 'diffvox_jax' / 'configs').glob('*.py')} == \
      {p.name for p in (REPO / 'configs').glob('*.py')}
  assert (target / 'diffvox_jax' / 'pretrained' / 'mask_baseline_16k' / 'params.msgpack').is_file()
  env = dict(os.environ, PYTHONPATH=str(target), JAX_PLATFORMS='cpu')
  where = subprocess.run([sys.executable, '-c', 'import diffvox_jax.config as c; print(c.CONFIG_DIR)'], env=env,
                         cwd=tmp_path, check=True, capture_output=True, text=True, timeout=120)
  assert where.stdout.strip() == str(target / 'diffvox_jax' / 'configs')
  result = subprocess.run([sys.executable, '-m', 'diffvox_jax.cli', 'model-summary', '--config', 'diffdmx_rt'],
                          env=env, cwd=tmp_path, check=True, capture_output=True, text=True, timeout=300)
  assert result.stdout.strip().splitlines()[-1] == 'total_params=101404598'
