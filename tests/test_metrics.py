"""Metrics against independent references: the MATLAB BSS Eval v3 toolbox, mir_eval, and analytic uSDR cases."""

import json
import pathlib
import warnings

import jax.numpy as jnp
import jsonschema
import museval
import numpy as np
import pytest
import scipy.io
import soundfile as sf

from diffvox_jax import metrics

FIXTURES = 'bsseval_fixtures'
MIR_EVAL_TOLERANCE_DB = 1e-2  # the tolerance of mir_eval's own tests for these fixtures.


def test_bss_eval_sources_matches_the_matlab_toolbox(shared_data):
  folder = shared_data / FIXTURES / 'matlab_v3'
  signals = scipy.io.loadmat(folder / 'source_signals.mat')
  expected = scipy.io.loadmat(folder / 'bss_output_MATLAB.mat')
  scores = metrics.bss_eval(signals['s'], signals['se'], sources_version=True, compute_permutation=True)
  np.testing.assert_allclose(scores.sdr[:, 0], expected['sdr'][:, 0], atol=1e-6, rtol=0)
  np.testing.assert_allclose(scores.sir[:, 0], expected['sir'][:, 0], atol=1e-6, rtol=0)
  np.testing.assert_allclose(scores.sar[:, 0], expected['sar'][:, 0], atol=1e-6, rtol=0)
  np.testing.assert_array_equal(scores.permutation[:, 0], [0, 1, 3, 2])
  np.testing.assert_array_equal(scores.permutation[:, 0], expected['perm'][:, 0])


def _stacked_wavs(folder: pathlib.Path) -> np.ndarray:
  """mir_eval's fixture folders hold one wav per source: `(sources, time)`."""
  return np.stack([sf.read(path)[0] for path in sorted(folder.glob('*.wav'))])


def _mir_eval_cases(shared_data: pathlib.Path) -> list[tuple[pathlib.Path, pathlib.Path, pathlib.Path]]:
  folder = shared_data / FIXTURES / 'mir_eval'
  cases = []
  for output in sorted(folder.glob('output*.json')):
    number = output.stem.removeprefix('output')
    reference, estimate = folder / f'ref{number}', folder / f'est{number}'
    if reference.is_dir() and estimate.is_dir():
      cases.append((reference, estimate, output))
  return cases


def test_bss_eval_sources_matches_mir_eval_fixture_outputs(shared_data):
  cases = _mir_eval_cases(shared_data)
  if not cases:
    pytest.skip(f'{shared_data / FIXTURES / "mir_eval"} has output0N.json but not the ref0N/ and est0N/ wav folders '
                "of mir_eval's tests/data/separation (the copy was flattened)")
  for reference, estimate, output in cases:
    expected = json.loads(output.read_text())['Sources']
    scores = metrics.bss_eval(_stacked_wavs(reference), _stacked_wavs(estimate), sources_version=True,
                              compute_permutation=True)
    for key, values in (('Source to Distortion', scores.sdr), ('Source to Interference', scores.sir),
                        ('Source to Artifact', scores.sar)):
      np.testing.assert_allclose(values[:, 0], expected[key], atol=MIR_EVAL_TOLERANCE_DB, err_msg=f'{output} {key}')
    np.testing.assert_array_equal(scores.permutation[:, 0], expected['Source permutation'])


@pytest.fixture(scope='module')
def mixed_sources(shared_data):
  """Two real recordings from the mir_eval fixture and swapped estimates that mix, delay and perturb them."""
  references = np.stack([sf.read(shared_data / FIXTURES / 'mir_eval' / f'{i}.wav')[0] for i in range(2)])
  rng = np.random.default_rng(0)
  mixing = np.array([[0.2, 0.9], [0.9, 0.15]])  # estimate 0 is mostly source 1 and estimate 1 mostly source 0.
  delayed = np.roll(references, 7, axis=1)
  estimates = mixing @ references + 0.3 * delayed + 0.05 * rng.standard_normal(references.shape)
  return references, estimates


def test_bss_eval_sources_matches_mir_eval_on_real_audio(mixed_sources):
  mir_eval_separation = pytest.importorskip('mir_eval.separation')
  references, estimates = mixed_sources
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', FutureWarning)  # mir_eval 0.8 deprecates its separation module.
    sdr, sir, sar, permutation = mir_eval_separation.bss_eval_sources(references, estimates)
  scores = metrics.bss_eval(references, estimates, sources_version=True, compute_permutation=True)
  np.testing.assert_allclose(scores.sdr[:, 0], sdr, atol=1e-8)
  np.testing.assert_allclose(scores.sir[:, 0], sir, atol=1e-8)
  np.testing.assert_allclose(scores.sar[:, 0], sar, atol=1e-8)
  np.testing.assert_array_equal(scores.permutation[:, 0], permutation)
  np.testing.assert_array_equal(permutation, [1, 0])  # reference j is found in estimate permutation[j].


def test_bss_eval_images_matches_mir_eval_on_stereo_real_audio(mixed_sources):
  mir_eval_separation = pytest.importorskip('mir_eval.separation')
  references, estimates = mixed_sources
  references = np.stack([references, np.roll(references, 3, axis=1)], axis=-1)  # (2, time, 2) stereo.
  estimates = np.stack([estimates[::-1], np.roll(estimates[::-1], 3, axis=1)], axis=-1)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', FutureWarning)
    sdr, isr, sir, sar, _ = mir_eval_separation.bss_eval_images(references, estimates, compute_permutation=False)
  scores = metrics.bss_eval(references, estimates)
  for ours, theirs in ((scores.sdr, sdr), (scores.isr, isr), (scores.sir, sir), (scores.sar, sar)):
    np.testing.assert_allclose(ours[:, 0], theirs, atol=1e-8)


def test_usdr_of_an_identical_estimate_is_the_energy_over_the_guard():
  reference = np.random.default_rng(1).standard_normal((1000, 2))
  energy = np.sum(reference.astype(np.float64) ** 2)
  assert metrics.usdr(reference, reference) == pytest.approx(10 * np.log10((energy + 1e-7) / 1e-7), abs=1e-12)


def test_usdr_of_a_half_scaled_estimate_is_six_db():
  reference = np.random.default_rng(2).standard_normal((44100, 2)).astype(np.float32)
  energy = np.sum(reference.astype(np.float64) ** 2)
  expected = 10 * np.log10((energy + 1e-7) / (energy / 4 + 1e-7))
  assert metrics.usdr(reference, 0.5 * reference) == pytest.approx(expected, abs=1e-9)
  assert metrics.usdr(reference, 0.5 * reference) == pytest.approx(10 * np.log10(4), abs=1e-6)


def test_usdr_of_silence_is_zero_db_without_nan():
  silence = np.zeros((4410, 2), np.float32)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert metrics.usdr(silence, silence) == 0.0


def test_usdr_sums_over_channels_and_time():
  """Error energy 1 on one channel of a two-channel signal of energy 4 -> 10 log10(4 / 1) (guards aside)."""
  reference = np.zeros((4, 2))
  reference[:, 0] = 1.0
  estimate = reference.copy()
  estimate[0, 1] = 1.0
  assert metrics.usdr(reference, estimate) == pytest.approx(10 * np.log10((4 + 1e-7) / (1 + 1e-7)), abs=1e-12)


def test_usdr_refuses_mismatched_shapes():
  with pytest.raises(ValueError, match='shape'):
    metrics.usdr(np.zeros((10, 2)), np.zeros((10, 1)))


def test_usdr_jax_matches_numpy():
  rng = np.random.default_rng(3)
  reference = rng.standard_normal((3, 2048, 2)).astype(np.float32)
  estimate = reference + rng.standard_normal((3, 2048, 2)).astype(np.float32) * np.array([0.01, 0.5, 3.0],
                                                                                         np.float32)[:, None, None]
  estimate[2] = 0.0
  batched = np.asarray(metrics.usdr_jax(jnp.asarray(reference), jnp.asarray(estimate)))
  assert batched.shape == (3,)
  expected = [metrics.usdr(r, e) for r, e in zip(reference, estimate, strict=True)]
  np.testing.assert_allclose(batched, expected, atol=1e-4)
  silent = metrics.usdr_jax(jnp.zeros((1, 64, 2)), jnp.zeros((1, 64, 2)))
  np.testing.assert_array_equal(np.asarray(silent), [0.0])


def test_frame_median_ignores_undefined_frames():
  frames = [{'metrics': {'SDR': value}} for value in (None, 1.0, 5.0, 3.0, None)]
  assert metrics.frame_median(frames, 'SDR') == 3.0
  assert np.isnan(metrics.frame_median(frames[:1], 'SDR'))


@pytest.fixture(scope='module')
def short_song():
  """One second of a stereo 'song' at 8 kHz: a harmonic 'voice' plus a noisy 'accompaniment'."""
  rate = 8000
  rng = np.random.default_rng(4)
  time = np.arange(rate) / rate
  voice = 0.3 * np.sin(2 * np.pi * 220 * time) * (1 + 0.5 * np.sin(2 * np.pi * 3 * time))
  vocals = np.stack([voice, 0.8 * voice], axis=1)
  accompaniment = 0.2 * rng.standard_normal(vocals.shape)
  return vocals, vocals + accompaniment, rate


def test_vocal_scores_follow_museval_layout_and_values(short_song):
  vocals, mixture, rate = short_song
  estimate = vocals + 0.3 * (mixture - vocals)
  scores = metrics.vocal_scores(vocals, estimate, mixture, rate, window_s=0.25)
  with (pathlib.Path(museval.__file__).parent / 'musdb.schema.json').open() as schema:
    jsonschema.validate(scores, json.load(schema))
  assert [target['name'] for target in scores['targets']] == ['vocals', 'accompaniment']
  sdr, isr, sir, sar = museval.evaluate([vocals, mixture - vocals], [estimate, mixture - estimate], win=2000, hop=2000)
  for index, target in enumerate(scores['targets']):
    assert [frame['time'] for frame in target['frames']] == [0.0, 0.25, 0.5, 0.75]
    for name, values in (('SDR', sdr), ('ISR', isr), ('SIR', sir), ('SAR', sar)):
      np.testing.assert_allclose([f['metrics'][name] for f in target['frames']], values[index], rtol=1e-12)
  # The vocal estimate is vocals + 0.3 accompaniment: its SIR is about the frame energy ratio of the two parts.
  energy_ratios = [10 * np.log10(np.sum(vocals[i:i + 2000] ** 2) / np.sum((estimate - vocals)[i:i + 2000] ** 2))
                   for i in range(0, len(vocals), 2000)]
  assert metrics.frame_median(scores['targets'][0]['frames'], 'SIR') == pytest.approx(np.median(energy_ratios),
                                                                                      abs=0.5)


def test_vocal_scores_of_the_mixture_score_the_vocals_only(short_song):
  """mixture - estimate is silent: the vocals' scores equal those with any second estimate (here a noisy one)."""
  vocals, mixture, rate = short_song
  scores = metrics.vocal_scores(vocals, mixture, mixture, rate, window_s=0.25)
  other_estimate = (mixture - vocals) + 0.1 * np.random.default_rng(5).standard_normal(vocals.shape)
  sdr, _, sir, _ = museval.evaluate([vocals, mixture - vocals], [mixture, other_estimate], win=2000, hop=2000)
  vocal_frames, accompaniment_frames = scores['targets'][0]['frames'], scores['targets'][1]['frames']
  np.testing.assert_allclose([f['metrics']['SDR'] for f in vocal_frames], sdr[0], rtol=1e-12)
  np.testing.assert_allclose([f['metrics']['SIR'] for f in vocal_frames], sir[0], rtol=1e-12)
  assert all(value is None for f in accompaniment_frames for value in f['metrics'].values())


def test_vocal_scores_of_silent_signals(short_song):
  vocals, mixture, rate = short_song
  accompaniment = mixture - vocals
  assert metrics.vocal_scores(np.zeros_like(vocals), accompaniment, accompaniment, rate) == {'targets': []}

  silent_estimate = metrics.vocal_scores(vocals, np.zeros_like(vocals), mixture, rate, window_s=0.25)
  assert all(value is None for target in silent_estimate['targets'] for frame in target['frames']
             for value in frame['metrics'].values())
  assert [frame['time'] for frame in silent_estimate['targets'][0]['frames']] == [0.0, 0.25, 0.5, 0.75]

  # A cappella (no accompaniment): the vocals are scored alone. Half the gain is a pure spatial (image) error:
  # no interference, SDR = ISR = 10 log10(1 / 0.5^2) (v4's image criteria compare with the reference itself).
  a_cappella = metrics.vocal_scores(vocals[:, :1], 0.5 * vocals[:, :1], vocals[:, :1], rate, window_s=0.5)
  vocal_frames = a_cappella['targets'][0]['frames']
  assert len(vocal_frames) == 2 and all(f['metrics']['SIR'] is None for f in vocal_frames)  # infinite SIR
  for name in ('SDR', 'ISR'):
    np.testing.assert_allclose([f['metrics'][name] for f in vocal_frames], 20 * np.log10(2), atol=1e-3)
  assert all(value is None for f in a_cappella['targets'][1]['frames'] for value in f['metrics'].values())
