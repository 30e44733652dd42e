"""Shared test set-up: two fake CPU devices and one XLA compilation cache (set before jax is imported), and the
`../shared/data` location."""

import os
import pathlib
import shutil

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# One persistent compilation cache for every test process and every command the tests start: the same train steps,
# samplers and models compile in many files, and a hit skips XLA (45 s for the device check's miniature train step
# on a slow core). Entries are keyed by the computation, the compiler flags and the jax version; a cache entry that
# cannot be read is recompiled with a warning.
XLA_CACHE_DIR = REPO_ROOT / '.pytest_cache' / 'xla'
XLA_CACHE_LIMIT_BYTES = 2 * 2**30  # emptied at the start of a run that finds it bigger
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(XLA_CACHE_DIR))
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402
import random_models  # noqa: E402
import soundfile as sf  # noqa: E402

SHARED_DATA = pathlib.Path(os.environ.get('DIFFVOX_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data'))


def pytest_sessionstart(session) -> None:
  """Empties the compilation cache once it outgrows XLA_CACHE_LIMIT_BYTES (in the main process, before workers)."""
  del session
  if 'PYTEST_XDIST_WORKER' in os.environ or not XLA_CACHE_DIR.is_dir():
    return
  if sum(path.stat().st_size for path in XLA_CACHE_DIR.rglob('*') if path.is_file()) > XLA_CACHE_LIMIT_BYTES:
    shutil.rmtree(XLA_CACHE_DIR)


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
