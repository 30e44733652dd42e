"""Separation: overlap-add through the separation path, streaming files at flat memory, format conversion,
refinement plumbing, the `diffvox separate` command end to end (bad inputs included) on a miniature model."""

import json
import os
import pathlib
import subprocess
import sys
import tracemalloc

import jax
import numpy as np
import pytest
import random_models
import soundfile as sf

from diffvox_jax import inference, separate
from diffvox_jax.config import load_config

RATE = 8000
MINI_OVERRIDES = random_models.MINI_MODEL + (
    'model.generator.attention=(False, True)', f'data.sample_rate={RATE}', 'data.segment=1024',
    'sampler.chunk=1024', 'sampler.steps=2', 'sampler.batch_size=3', 'sampler.eta=0.4', 'sampler.cutoff_hz=1000.0')


def _stub(name: str, chunk=1024, batch_size=3, overlap=0.2, channels=2, calls=None) -> separate.Separator:
  """A Separator whose 'model' is a fixed function of each chunk (and of its key, for 'keyed')."""

  def sample_batch(mixture, keys, initial=None):
    assert mixture.shape == (batch_size, chunk, channels) and keys.shape == (batch_size,)  # static shapes.
    if calls is not None:
      calls.append(mixture.shape)
    if name == 'identity':
      return mixture
    if name == 'half':
      return 0.5 * mixture
    if name == 'estimate':
      return initial
    scale = jax.vmap(lambda key: jax.random.uniform(key))(keys)  # 'keyed': one random gain per chunk.
    return mixture * np.asarray(scale)[:, None, None]

  return separate.Separator(sample_batch, RATE, channels, chunk, overlap, batch_size)


def _noise(length, channels=2, seed=0):
  return np.random.default_rng(seed).uniform(-0.5, 0.5, (length, channels)).astype(np.float32)


@pytest.mark.parametrize('length', [1, 700, 1024, 1025, 5000, 9 * 1024])
@pytest.mark.parametrize('overlap', [0.0, 0.2, 0.5])
def test_identity_model_reconstructs_the_input(length, overlap):
  mixture = _noise(length)
  out = _stub('identity', overlap=overlap).separate_array(mixture, RATE, jax.random.key(0))
  np.testing.assert_allclose(out, mixture, atol=1e-6)


def test_mono_input_comes_back_mono():
  mixture = _noise(3000, channels=1)
  out = _stub('half').separate_array(mixture, RATE, jax.random.key(0))
  assert out.shape == (3000, 1)
  np.testing.assert_allclose(out, 0.5 * mixture, atol=1e-6)


def test_the_result_does_not_depend_on_the_batch_size():
  mixture = _noise(7000)
  results = [_stub('keyed', batch_size=size).separate_array(mixture, RATE, jax.random.key(4)) for size in (1, 2, 5)]
  for other in results[1:]:
    np.testing.assert_allclose(other, results[0], atol=1e-6)
  other_seed = _stub('keyed').separate_array(mixture, RATE, jax.random.key(5))
  assert np.max(np.abs(other_seed - results[0])) > 1e-3


def test_batches_are_padded_to_the_static_size():
  calls = []
  plan = _stub('identity').plan(5000)
  _stub('identity', calls=calls).separate_array(_noise(5000), RATE, jax.random.key(0))
  assert len(calls) == -(-plan.num_chunks // 3) and set(calls) == {(3, 1024, 2)}


def _write(path, audio, rate=RATE, subtype='FLOAT'):
  sf.write(path, audio, rate, subtype=subtype)
  return path


def test_file_outputs_sum_to_the_input_at_its_rate_and_channels(tmp_path):
  # Mono 11.025 kHz in, model at 8 kHz stereo; a 300 Hz tone survives both resamplings.
  rate, length = 11025, 11025 * 2 + 17
  tone = (0.4 * np.sin(2 * np.pi * 300 * np.arange(length) / rate)).astype(np.float32)[:, None]
  source = _write(tmp_path / 'tone.flac', tone, rate, subtype='PCM_24')
  read_back, _ = sf.read(source, dtype='float32', always_2d=True)
  outputs = separate.separate_file(_stub('half'), source, separate.stem_paths(tmp_path / 'out'),
                                   rng=jax.random.key(0), bits='32f',
                                   progress=False)
  vocals, vocals_rate = sf.read(outputs.paths['vocals'], dtype='float32', always_2d=True)
  instrumental, _ = sf.read(outputs.paths['instrumental'], dtype='float32', always_2d=True)
  assert vocals_rate == rate and vocals.shape == (length, 1) and instrumental.shape == (length, 1)
  np.testing.assert_allclose(vocals + instrumental, read_back, atol=1e-6)
  inner = slice(2000, -2000)  # away from the resampler's edge transients.
  np.testing.assert_allclose(vocals[inner], 0.5 * read_back[inner], atol=2e-3)


def test_identity_file_separation_is_exact_at_the_model_format(tmp_path):
  mixture = _noise(12345)
  source = _write(tmp_path / 'mix.wav', mixture)
  outputs = separate.separate_file(_stub('identity'), source, separate.stem_paths(tmp_path / 'out'),
                                   rng=jax.random.key(0), bits='32f',
                                   progress=False)
  np.testing.assert_array_equal(sf.read(outputs.paths['vocals'], dtype='float32')[0], mixture)
  np.testing.assert_array_equal(sf.read(outputs.paths['instrumental'], dtype='float32')[0], 0.0)
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['instrumental.wav', 'vocals.wav']  # no temps.


def test_integer_outputs_clamp_or_rescale_and_flac_works(tmp_path):
  loud = np.full((3000, 2), 0.9, np.float32)
  source = _write(tmp_path / 'loud.wav', loud)
  doubling = separate.Separator(lambda m, k, i=None: 2 * m, RATE, 2, 1024, 0.2, 2)
  clamped = separate.separate_file(doubling, source, separate.stem_paths(tmp_path / 'clamp', 'flac'),
                                   rng=jax.random.key(0), bits='16', clip='clamp', progress=False)
  vocals, _ = sf.read(clamped.paths['vocals'], dtype='float32')
  assert clamped.paths['vocals'].suffix == '.flac' and np.max(vocals) <= 1.0 and np.min(vocals) > 0.99
  assert clamped.clamped == {'vocals': loud.size, 'instrumental': 0} and clamped.gains['vocals'] == 1.0
  # Rescaled: vocals 1.8 everywhere -> divided by 1.8; the instrumental (-0.9) stays as it is.
  rescaled = separate.separate_file(doubling, source, separate.stem_paths(tmp_path / 'rescale', 'wav'),
                                    rng=jax.random.key(0), bits='24', progress=False)
  vocals, _ = sf.read(rescaled.paths['vocals'], dtype='float32')
  instrumental, _ = sf.read(rescaled.paths['instrumental'], dtype='float32')
  np.testing.assert_allclose(vocals, 1.0, atol=2.0**-22)
  np.testing.assert_allclose(instrumental, -0.9, atol=2.0**-22)
  assert rescaled.clamped['vocals'] == 0 and rescaled.gains == pytest.approx({'vocals': 1 / 1.8, 'instrumental': 1})
  assert sorted(p.name for p in (tmp_path / 'rescale').iterdir()) == ['instrumental.wav', 'vocals.wav']


def test_refinement_passes_the_estimate_chunks(tmp_path):
  mixture, estimate = _noise(5000, seed=1), _noise(5000, seed=2)
  source = _write(tmp_path / 'mix.wav', mixture)
  guess = _write(tmp_path / 'guess.wav', estimate)
  outputs = separate.separate_file(_stub('estimate'), source, separate.stem_paths(tmp_path / 'out'),
                                   rng=jax.random.key(0), bits='32f',
                                   initial=guess, progress=False)
  np.testing.assert_allclose(sf.read(outputs.paths['vocals'], dtype='float32')[0], estimate, atol=1e-6)
  np.testing.assert_allclose(_stub('estimate').separate_array(mixture, RATE, jax.random.key(0), estimate), estimate,
                             atol=1e-6)
  short = _write(tmp_path / 'short.wav', estimate[:4000])
  with pytest.raises(separate.SeparationError, match='short.wav: 4000 samples'):
    separate.separate_file(_stub('estimate'), source, separate.stem_paths(tmp_path / 'out2'),
                           rng=jax.random.key(0), initial=short,
                           progress=False)


def test_failed_separation_leaves_no_output(tmp_path):
  source = _write(tmp_path / 'mix.wav', _noise(5000))
  broken = separate.Separator(lambda m, k, i=None: m * np.nan, RATE, 2, 1024, 0.2, 2)
  with pytest.raises(separate.SeparationError, match='mix.wav: the model produced NaN'):
    separate.separate_file(broken, source, separate.stem_paths(tmp_path / 'out'), rng=jax.random.key(0), progress=False)
  assert not (tmp_path / 'out').exists()  # nothing left behind, not even the folder it created.


def _peak_traced_bytes(separator, path, out_dir):
  tracemalloc.start()
  try:
    separate.separate_file(separator, path, separate.stem_paths(out_dir), rng=jax.random.key(0), progress=False)
    return tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_long_files_stream_at_flat_memory(tmp_path):
  """A 10-minute file needs no more Python-heap memory than a 1-minute one, far below the track's size.

  tracemalloc sees every numpy buffer; a path that materialised the track would need > 38 MB (float32 stereo
  at 8 kHz) for 10 minutes. The model is an identity stub (the sampler's memory is per batch anyway).
  """
  peaks = {}
  for minutes in (1, 10):
    path = tmp_path / f'{minutes}min.wav'
    with sf.SoundFile(path, 'w', RATE, 2, subtype='PCM_16') as file:
      for _ in range(minutes * 6):  # written 10 s at a time.
        file.write(_noise(10 * RATE, seed=minutes))
    peaks[minutes] = _peak_traced_bytes(_stub('identity', chunk=8192, batch_size=4), path, tmp_path / 'out')
  track_bytes = 10 * 60 * RATE * 2 * 4
  assert peaks[10] < track_bytes / 4, peaks
  assert peaks[10] < 1.2 * peaks[1] + 1e6, peaks


def _mini_checkpoint(folder: pathlib.Path) -> pathlib.Path:
  """An exported miniature model with random parameters."""
  return random_models.write_random_checkpoint(folder, load_config('cpu_tiny', MINI_OVERRIDES))


def test_separate_command_end_to_end_with_bad_inputs(tmp_path):
  checkpoint = _mini_checkpoint(tmp_path / 'model')
  good = _noise(3 * RATE, seed=3)
  inputs = tmp_path / 'in'
  (inputs / 'album' / 'disc1').mkdir(parents=True)
  _write(inputs / 'song.wav', good)
  _write(inputs / 'album' / 'disc1' / 'track.flac', good[:RATE, :1], rate=16000, subtype='PCM_16')
  (inputs / 'album' / 'notes.txt').write_text('not audio')  # not an audio suffix: skipped, no error.
  (inputs / 'fake.wav').write_text('this is not a wav file')
  _write(inputs / 'empty.wav', np.zeros((0, 2), np.float32))
  (inputs / 'nothing_here').mkdir()
  command = [sys.executable, '-m', 'diffvox_jax.cli', 'separate', str(inputs / 'song.wav'), str(inputs / 'album'),
             str(inputs / 'fake.wav'), str(inputs / 'empty.wav'), str(inputs / 'missing.mp3'),
             str(inputs / 'nothing_here'), '--checkpoint', str(checkpoint), '--out', str(tmp_path / 'out'),
             '--bits', '32f', '--seed', '3']
  result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
                          check=False, timeout=300)
  errors = [line for line in result.stderr.splitlines() if line.startswith('diffvox: ')]
  assert result.returncode == 1, result.stderr
  for bad in ('fake.wav', 'empty.wav', 'missing.mp3', 'nothing_here'):
    assert sum(bad in line for line in errors) == 1, (bad, errors)
  assert errors[-1] == 'diffvox: 4 of 6 inputs failed'
  vocals, rate = sf.read(tmp_path / 'out' / 'song' / 'vocals.wav', dtype='float32', always_2d=True)
  instrumental, _ = sf.read(tmp_path / 'out' / 'song' / 'instrumental.wav', dtype='float32', always_2d=True)
  assert rate == RATE and vocals.shape == good.shape and np.all(np.isfinite(vocals)) and np.std(vocals) > 0
  np.testing.assert_allclose(vocals + instrumental, good, atol=1e-6)
  track, track_rate = sf.read(tmp_path / 'out' / 'disc1' / 'track' / 'vocals.wav', always_2d=True)
  assert track_rate == 16000 and track.shape == (RATE, 1)

  # The in-memory path (evaluation's `separate_array`) gives the same vocals as the streamed file.
  config, params = inference.load_for_inference(checkpoint)
  in_memory = separate.separate_array(config, params, good, rng=jax.random.key(3))
  np.testing.assert_allclose(in_memory, vocals, atol=1e-5)
  assert json.loads((checkpoint / 'config.json').read_text())['sampler']['steps'] == 2


def test_chunk_length_rounds_to_the_down_sampling():
  config = load_config('cpu_tiny')
  assert separate.chunk_length(config, 3.0) == 517 * 128  # 3 s at 22.05 kHz = 66150 samples = 516.8 * 128.
  assert separate.chunk_length(config, 0.001) == 128
  with pytest.raises(ValueError, match='positive'):
    separate.chunk_length(config, 0.0)


def test_a_missing_packaged_model_is_a_one_line_error(monkeypatch):
  monkeypatch.setattr(inference, 'DEFAULT_MODEL', 'no_such_model')
  with pytest.raises(inference.CheckpointError, match='no_such_model: .*--checkpoint') as error:
    inference.default_checkpoint()
  assert '\n' not in str(error.value)
