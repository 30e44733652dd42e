"""Shared test set-up: two fake CPU devices (set before jax is imported) and the `../shared/data` location."""

import os
import pathlib

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402
import random_models  # noqa: E402
import soundfile as sf  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = pathlib.Path(os.environ.get('DIFFVOX_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data'))


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  """The real-audio folder beside the checkout; tests that need it skip with a reason where it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f'real audio not found at {SHARED_DATA} (set DIFFVOX_SHARED_DATA)')
  return SHARED_DATA


@pytest.fixture(scope='session')
def mini_checkpoint(tmp_path_factory) -> pathlib.Path:
  """An exported `random_models.EVAL_MINI` model (random parameters)."""
  return random_models.write_eval_mini(tmp_path_factory.mktemp('mini') / 'model')


@pytest.fixture(scope='session')
def mir1k_data(tmp_path_factory, shared_data) -> pathlib.Path:
  """The first second of the two `random_models.EVAL_CLIPS` MIR-1K dev clips prepared with `diffvox prepare`'s
  builder at 8 kHz mono (split `validation`); returns the data folder."""
  from diffvox_jax.data import builders

  root = tmp_path_factory.mktemp('mir1k')
  for clip in random_models.EVAL_CLIPS:
    folder = root / 'source' / 'dev' / clip
    folder.mkdir(parents=True)
    for stem in ('vocals', 'accompaniment'):
      audio, rate = sf.read(shared_data / 'mir1k' / 'dev' / clip / f'{stem}.flac')
      sf.write(folder / f'{stem}.flac', audio[:rate], rate)
  rate = random_models.EVAL_RATE
  builder = builders.make_builder('mir1k', root / 'data', rate, 1, builders.canonical_options('mir1k'))
  builders.prepare(builder, root / 'source')
  return root / 'data'
