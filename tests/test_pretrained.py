"""The pretrained models shipped inside the package: small, complete, loadable by name, and the default separates
unseen songs."""

import math
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import random_models
import soundfile as sf

from diffvox_jax import baselines, inference, metrics, separate
from diffvox_jax.data import synthetic

MAX_BYTES = 30 * 2**20
# A synthetic song none of the packaged models heard (the demo model trained on seeds 0 .. 95, mask_baseline_16k on
# 0 .. 159, diffdmx_spectral_16k on no synthetic song at all).
UNSEEN_SEED = 5000
PACKAGED = inference.packaged_models()


@pytest.fixture(scope='module')
def packaged():
  """(folder, config, params) of the packaged model."""
  folder = inference.default_checkpoint()
  config, params = inference.load_for_inference(folder)
  return folder, config, params


def test_the_package_ships_the_default_and_the_earlier_models():
  assert {'mask_baseline_16k', 'diffdmx_spectral_16k', 'diffdmx_demo_8k'} <= set(PACKAGED)
  assert inference.default_checkpoint().name == 'mask_baseline_16k'
  assert inference.resolve_checkpoint('diffdmx_demo_8k') == inference.default_checkpoint().parent / 'diffdmx_demo_8k'
  assert inference.resolve_checkpoint('no/such/folder') == pathlib.Path('no/such/folder')  # fails later, naming it


@pytest.mark.parametrize('name', PACKAGED)
def test_every_packaged_model_is_small_and_complete(name):
  folder = inference.resolve_checkpoint(name)
  assert folder.parent == pathlib.Path(separate.__file__).parent / 'pretrained'
  for file in ('config.json', inference.PARAMS_FILE, 'MODEL_CARD.md'):
    assert (folder / file).is_file(), file
  assert sum(path.stat().st_size for path in folder.iterdir()) <= MAX_BYTES


@pytest.mark.parametrize('name', PACKAGED)
def test_the_packaged_parameters_fit_their_config(name):
  config, params = inference.load_for_inference(inference.resolve_checkpoint(name))
  assert '/' not in config.data.data_dir.removeprefix('~/')  # no machine paths shipped
  expected = random_models.param_shapes(config)
  assert jax.tree.map(lambda leaf: leaf.shape, params) == jax.tree.map(lambda leaf: leaf.shape, expected)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


@pytest.mark.slow
def test_the_packaged_model_separates_an_unseen_synthetic_song(packaged):
  """The default model, with its own settings, on a (synthetic) song it never saw, beats the mixture by a wide
  margin: it guards against a broken export or separation path."""
  _, config, params = packaged
  song = synthetic.render_song(UNSEEN_SEED, config.data.sample_rate, max_seconds=8.0)
  vocals = song.stems['vocals']
  mixture = sum(song.stems.values())
  estimate = separate.separate_array(config, params, mixture, rng=jax.random.key(0))
  model_sdr, mixture_sdr = metrics.usdr(vocals, estimate), metrics.usdr(vocals, baselines.mixture_estimate(mixture))
  assert math.isfinite(model_sdr)
  assert model_sdr > mixture_sdr + 3.0, (model_sdr, mixture_sdr)  # +7.5 dB on the development machine


@pytest.mark.slow
def test_diffvox_separate_needs_no_checkpoint(tmp_path, shared_data):
  clip = shared_data / 'mir1k' / 'dev' / 'Ani_1_01'
  vocals, rate = sf.read(clip / 'vocals.flac', dtype='float32')
  accompaniment, _ = sf.read(clip / 'accompaniment.flac', dtype='float32')
  song = tmp_path / 'song.wav'
  sf.write(song, (vocals + accompaniment)[:2 * rate], rate)
  command = [sys.executable, '-m', 'diffvox_jax.cli', 'separate', str(song), '--out', str(tmp_path / 'sep')]
  subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
  for stem in ('vocals', 'instrumental'):
    info = sf.info(tmp_path / 'sep' / 'song' / f'{stem}.wav')
    assert (info.samplerate, info.channels, info.frames) == (rate, 1, 2 * rate)
