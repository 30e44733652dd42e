"""The quality benchmark's metrics and sets (tools/bench_quality.py) against hand-computed and analytic values,
and the validation separation written during training (TensorBoard audio, image, scalar; best/ parameters)."""

import importlib.util
import json
import struct

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT
from random_models import tiny_spectral
from tensorboardX.proto import event_pb2

from diffvox_jax import inference, metrics, plots
from diffvox_jax.data import pipeline
from diffvox_jax.models import build_model
from diffvox_jax.train import loop, validation
from diffvox_jax.train import state as state_lib


def _tool(name: str):
  spec = importlib.util.spec_from_file_location(name, REPO_ROOT / 'tools' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _bench_quality():
  return _tool('bench_quality')


def _tracks(lengths=(16000, 8000), seed=0):
  rng = np.random.default_rng(seed)
  tracks = []
  for index, length in enumerate(lengths):
    vocals, accompaniment = rng.normal(0, 0.1, (length, 1)), rng.normal(0, 0.1, (length, 1))
    tracks.append(pipeline.Track(f't{index}', vocals + accompaniment, vocals, 16000))
  return tracks


def test_score_aggregates_usdr_as_computed_by_hand():
  bench = _bench_quality()
  tracks = _tracks(lengths=(4000, 4000, 4000))
  gains = {'t0': 0.5, 't1': 0.9, 't2': -1.0}  # uSDR 10 log10(1 / (1 - g)^2): 6.02, 20.0, -6.02 dB.
  result = bench.score(tracks, lambda t: gains[t.name] * t.vocals, mixture_scores=[0.0, 25.0, -10.0],
                       with_gnsdr=False)
  expected = [10 * np.log10(1 / (1 - g) ** 2) for g in gains.values()]
  np.testing.assert_allclose(list(result['per_clip'].values()), expected, atol=1e-6)
  assert result['median'] == pytest.approx(np.median(expected)) and result['mean'] == pytest.approx(np.mean(expected))
  assert result['beats_mixture'] == pytest.approx(2 / 3)  # above 0 and -10 dB, not above 25 dB.


def test_gnsdr_is_the_length_weighted_sdr_gain_over_the_mixture():
  bench = _bench_quality()
  tracks = _tracks()
  leak = (0.1, 0.5)  # estimate = vocals + leak * accompaniment: SDR about 20 and 6 dB; the mixture's about 0 dB.
  estimates = [t.vocals + k * (t.mixture - t.vocals) for t, k in zip(tracks, leak, strict=True)]

  def analytic_sdr(track, estimate):
    return 10 * np.log10(np.sum(track.vocals ** 2) / np.sum((estimate - track.vocals) ** 2))

  nsdr = [analytic_sdr(t, e) - analytic_sdr(t, t.mixture) for t, e in zip(tracks, estimates, strict=True)]
  expected = (16000 * nsdr[0] + 8000 * nsdr[1]) / 24000
  # BSS Eval's 512-tap projection absorbs a little of the independent leak, so it reads slightly higher.
  assert bench.gnsdr(tracks, estimates) == pytest.approx(expected, abs=0.3)
  assert abs(expected - (16000 * 20 + 8000 * 6.02) / 24000) < 0.5


def test_acappella_mixtures_have_the_requested_vocal_ratio(shared_data):
  bench = _bench_quality()
  dev = bench.mir1k_dev(shared_data, every=20)
  tracks = bench.acappella_mix(shared_data, dev, [-5.0, 5.0])
  assert len(tracks) == 2 * len(list((shared_data / 'acappella').glob('*.flac')))
  for track in tracks:
    snr = float(track.name.rsplit('@', 1)[1].removesuffix('dB'))
    assert metrics.usdr(track.vocals, track.mixture) == pytest.approx(snr, abs=1e-3)  # the mixture scores its SNR.
    assert np.max(np.abs(track.mixture)) <= 1.0 and track.sample_rate == 16000


def test_mir1k_clips_come_from_the_requested_singers(shared_data):
  bench = _bench_quality()
  singers = {split: {t.name.split('_')[0] for t in bench.mir1k_dev(shared_data, every=30, split=split)}
             for split in ('dev', 'train')}
  assert singers == {'dev': {'Ani', 'heycat'}, 'train': {'abjones', 'amy'}}
  with pytest.raises(FileNotFoundError, match='no MIR-1K test clips'):
    bench.mir1k_dev(shared_data, split='test')


def _events(folder):
  """Every event of the TensorBoard files in `folder` (the TFRecord framing: length, crc, payload, crc)."""
  events = []
  for path in sorted(folder.glob('events.out.tfevents.*')):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[offset + 12:offset + 12 + length])
      events.append(event)
      offset += 12 + length + 4
  return events


def test_validation_separation_writes_audio_spectrograms_usdr_and_keeps_the_best(tmp_path):
  config = tiny_spectral('spectral', **{'sampler.steps': 2, 'sampler.num_samples': 1})
  model = build_model(config)
  params = jax.jit(lambda rng: state_lib.create_train_state(model, config, rng))(jax.random.key(0)).params
  rng = np.random.default_rng(0)
  vocals = rng.normal(0, 0.1, (3, 1024, 1)).astype(np.float32)
  batch = {'vocals': vocals, 'mixture': vocals + rng.normal(0, 0.1, vocals.shape).astype(np.float32)}
  validator = validation.ValidationSeparation(model, config, batch, tmp_path)
  reporter = loop.Reporter(config, tmp_path, 0)  # what the training loop does with the returned uSDR
  first = validator(10, params, reporter.writer)
  reporter.scalars({'eval_ema/separation_usdr': first}, 10)
  worse = jax.tree.map(lambda p: p * 0.0, params)  # all-zero parameters: estimate 0.25 mixture, other score.
  second = validator(20, worse, reporter.writer)
  reporter.scalars({'eval_ema/separation_usdr': second}, 20)
  reporter.close()
  tags = {(e.step, v.tag): v for e in _events(tmp_path / 'tensorboard') for v in e.summary.value}
  assert tags[(10, 'eval_ema/separation_usdr')].simple_value == pytest.approx(first, abs=1e-4)
  assert tags[(20, 'eval_ema/separation_usdr')].simple_value == pytest.approx(second, abs=1e-4)
  assert plots.read_metrics(tmp_path / loop.METRICS_FILE)['eval_ema/separation_usdr'] == [
      (10, pytest.approx(first)), (20, pytest.approx(second))]
  for index in range(2):  # train.eval_audio_clips = 2 of the 3 crops
    assert tags[(10, f'separation_{index}/estimate')].audio.sample_rate == 16000
    assert tags[(10, f'separation_{index}/vocals')].audio.length_frames == 1024
    assert tags[(20, f'separation_{index}/spectrogram_estimate_over_truth')].image.height > 0
  assert (10, 'separation_2/estimate') not in tags
  best = json.loads((tmp_path / 'best' / validation.BEST_FILE).read_text())
  assert best == {'step': 10 if first >= second else 20, 'usdr': pytest.approx(max(first, second))}
  loaded_config, loaded = inference.load_for_inference(tmp_path / 'best')
  assert loaded_config.model.kind == 'spectral'
  assert jax.tree.structure(loaded) == jax.tree.structure(jax.device_get(params))


def test_spectrogram_image_is_a_normalised_single_channel_stack():
  tone = np.sin(2 * np.pi * 1000 * np.arange(4096) / 8000)
  image = validation.spectrogram_image([tone, np.zeros(4096)])
  assert image.shape[0] == 1 and image.shape[1] == 2 * 257 and image.min() >= 0 and image.max() == 1.0
  assert image[0, :257].max() == 1.0 and image[0, 257:].max() == 0.0  # silence sits 80 dB down, at 0.


def test_the_frontier_spends_each_budget_with_the_most_steps_that_fit():
  frontier = _tool('bench_frontier')
  assert [frontier.steps_for('ddim', n, 1.0) for n in (1, 2, 10)] == [1, 2, 10]
  assert [frontier.steps_for('heun', n, 1.0) for n in (1, 2, 4, 5, 10)] == [1, 2, 3, 3, 6]  # 2 T - 2 from noise
  assert [frontier.steps_for('heun', n, 0.5) for n in (1, 2, 3, 10)] == [1, 1, 2, 5]  # 2 T - 1 from an estimate


def test_the_frontier_runs_budgets_above_the_limit_for_the_reference_only():
  frontier = _tool('bench_frontier')
  nfes = [1, 2, 10, 20, 50]
  assert frontier.budgets('ddim', 'noise', nfes, 10) == nfes
  assert frontier.budgets('ddim', 'direct', nfes, 10) == [1, 2, 10]
  assert frontier.budgets('heun', 'noise', nfes, 10) == [1, 2, 10]
  assert frontier.budgets('heun', 'noise', nfes, 0) == nfes


def test_the_frontier_summary_against_hand_picked_points():
  frontier = _tool('bench_frontier')
  point = lambda method, init, eta, nfe, usdr: dict(method=method, init=init, eta=eta, nfe=nfe, usdr=usdr)  # noqa: E731
  points = [point('ddim', 'noise', 0.0, 50, 7.0), point('ddim', 'noise', 0.4, 50, 7.3),
            point('ddim', 'direct', 0.0, 50, 9.0),  # not the reference: ddim50 starts from noise.
            point('heun', 'noise', 0.0, 10, 7.25), point('heun', 'noise', 0.0, 6, 7.1),
            point('dpmpp_2m', 'direct', 0.4, 4, 7.15), point('dpmpp_2m', 'direct', 0.4, 20, 7.2)]
  summary = frontier.summarize(points)
  assert summary == {'ddim50_usdr': 7.3, 'best10_usdr': 7.25, 'best10_method': 'heun/noise/eta0',
                     'best5_usdr': 7.15, 'nfe_to_match_ddim50': 10}
