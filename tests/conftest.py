"""Shared test set-up: two fake CPU devices (set before jax is imported) and the `../shared/data` location."""

import os
import pathlib

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = pathlib.Path(os.environ.get('DIFFVOX_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data'))


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  """The real-audio folder beside the checkout; tests that need it skip with a reason where it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f'real audio not found at {SHARED_DATA} (set DIFFVOX_SHARED_DATA)')
  return SHARED_DATA
