"""The evaluation harness: baselines, aggregation, resumable per-track results and `diffvox evaluate` end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import page_checks
import pytest
import random_models
import soundfile as sf

from diffvox_jax import audio, baselines, evaluate, files, inference, metrics, results
from diffvox_jax.data import pipeline

RATE = random_models.EVAL_RATE
CLIPS = random_models.EVAL_CLIPS


def _song(seconds: float = 1.0, seed: int = 0) -> pipeline.Track:
  rng = np.random.default_rng(seed)
  time = np.arange(int(seconds * RATE)) / RATE
  vocals = 0.3 * np.sin(2 * np.pi * 330 * time)[:, None]
  accompaniment = 0.2 * rng.standard_normal(vocals.shape)
  return pipeline.Track(f'song {seed}', (vocals + accompaniment).astype(np.float32), vocals.astype(np.float32), RATE)


def test_oracle_irm_scores_above_the_mixture_on_a_real_song(shared_data):
  folder = shared_data / 'musdb_sample' / 'Music Delta - 80s Rock'
  mixture, rate = sf.read(folder / 'mixture.flac', dtype='float32')
  vocals, _ = sf.read(folder / 'vocals.flac', dtype='float32')
  track = pipeline.Track('80s Rock', mixture[:3 * rate], vocals[:3 * rate], rate)
  irm = evaluate.score_track(track, baselines.oracle_irm(track.mixture, track.vocals), museval=True, window_s=1.0)
  mix = evaluate.score_track(track, baselines.mixture_estimate(track.mixture), museval=True, window_s=1.0)
  assert irm['usdr']['vocals'] > mix['usdr']['vocals'] + 10
  assert mix['usdr']['vocals'] == pytest.approx(metrics.usdr(track.vocals, track.mixture))
  vocal_sdr = [metrics.frame_median(r['targets'][0]['frames'], 'SDR') for r in (irm, mix)]
  assert vocal_sdr[0] > vocal_sdr[1] + 10


def test_oracle_irm_passes_a_lone_source_and_removes_a_missing_one():
  """Mask 1 where there is no accompaniment (perfect reconstruction of the Hann STFT) and 0 without vocals."""
  song = _song()
  assert metrics.usdr(song.vocals, baselines.oracle_irm(song.vocals, song.vocals)) > 90
  accompaniment = song.mixture - song.vocals
  assert np.max(np.abs(baselines.oracle_irm(accompaniment, np.zeros_like(accompaniment)))) < 1e-6
  assert baselines.oracle_irm(song.mixture[:1001], song.vocals[:1001]).shape == (1001, 1)


def test_statistics_over_runs_and_tracks():
  values = np.array([[1.0, 2.0, 10.0, np.nan],
                     [3.0, 4.0, np.nan, np.nan]])  # (runs, tracks); the last track undefined in every run.
  stats = results.metric_statistics(values)
  per_track = [2.0, 3.0, 10.0]  # the mean over runs where defined.
  assert stats['median'] == pytest.approx(np.median(per_track))
  assert stats['mean'] == pytest.approx(np.mean(per_track))
  assert stats['per_run_median'] == [2.0, 3.5]
  assert stats['median_runs_mean'] == pytest.approx(2.75)
  assert stats['median_runs_std'] == pytest.approx(0.75)
  assert stats['tracks'] == 3
  assert results.metric_statistics(np.full((1, 2), np.nan))['median'] is None


def test_the_headline_is_the_papers_mean_over_runs_of_the_median():
  """Two runs of three tracks where the two statistics differ: per-run medians 2 and 6 (mean 4, std 2), per-track
  run means 3.5, 4.5, 5 (median 4.5)."""
  values = np.array([[1.0, 2.0, 8.0],
                     [6.0, 7.0, 2.0]])
  stats = results.metric_statistics(values)
  system = {'label': 'model', 'runs': 2,
            'metrics': {'usdr': stats, **{name: results.metric_statistics(values) for name in metrics.BSS_METRICS}}}
  headline = results.headline(system)
  assert headline['usdr'] == pytest.approx(4.0) and headline['usdr_runs_std'] == pytest.approx(2.0)
  assert headline['usdr_median'] == pytest.approx(4.5)
  table = results.summary_markdown({'dataset': 'd', 'split': 's', 'tracks': ['a', 'b', 'c'],
                                    'systems': {'model': system}})
  header, _, row = table.strip().splitlines()[-3:]
  assert header.split('|')[3].strip().startswith('uSDR (paper')
  assert row.split('|')[3].strip() == '4.00 ± 2.00' and row.split('|')[4].strip() == '4.50'


def test_run_systems_writes_results_and_resumes(tmp_path):
  """A stochastic stand-in system: run r scales the vocals by gains[r], so every uSDR is known in closed form."""
  gains = (0.5, 0.9)
  calls = []

  def scaled(track, run):
    calls.append((track.name, run))
    return gains[run] * track.vocals

  system = evaluate.System('model', 'scaled vocals', scaled, 2, tmp_path / 'model', {'gains': list(gains)})
  tracks = [_song(seed=0), _song(seconds=0.5, seed=1)]
  names = evaluate.run_systems([system], tracks, museval=False, progress=False)
  assert names == ['song 0', 'song 1'] and len(calls) == 4
  record = files.read_json(results.result_path(tmp_path / 'model', 1, 'song 0'))
  assert record['usdr']['vocals'] == pytest.approx(metrics.usdr(tracks[0].vocals, 0.9 * tracks[0].vocals))
  assert 'targets' not in record and record['settings'] == {'gains': [0.5, 0.9]}

  summary = results.summarize(system, names)['metrics']['usdr']
  per_run = [-20 * np.log10(1 - g) for g in gains]  # the 1e-7 guards are negligible at these energies.
  assert summary['per_run_median'] == pytest.approx(per_run, abs=1e-5)
  assert summary['median'] == pytest.approx(np.mean(per_run), abs=1e-5)
  assert summary['median_runs_std'] == pytest.approx(np.std(per_run), abs=1e-5)

  evaluate.run_systems([system], tracks, museval=False, progress=False)
  assert len(calls) == 4  # everything reused
  evaluate.run_systems([system], tracks, museval=True, progress=False)
  assert len(calls) == 8  # museval was not computed before: scored again
  assert files.read_json(results.result_path(tmp_path / 'model', 0, 'song 1'))['targets'][0]['name'] == 'vocals'

  # Scoring in worker processes writes the same results.
  pooled = system._replace(results_dir=tmp_path / 'pooled')
  evaluate.run_systems([pooled], tracks, museval=True, workers=2, progress=False)
  for run, name in ((0, 'song 0'), (1, 'song 1')):
    here, there = (files.read_json(results.result_path(tmp_path / f, run, name)) for f in ('model', 'pooled'))
    here.pop('estimate_seconds'), there.pop('estimate_seconds')
    assert here == there

  changed = system._replace(settings={'gains': [0.1, 0.2]})
  with pytest.raises(ValueError, match='made with settings'):
    evaluate.run_systems([changed], tracks, museval=False, progress=False)
  with pytest.raises(ValueError, match='appears twice'):
    evaluate.run_systems([system], [tracks[0], tracks[0]], museval=False, progress=False)


def test_evaluate_command_end_to_end(tmp_path, mini_checkpoint, mir1k_data):
  out = tmp_path / 'eval'
  command = [sys.executable, '-m', 'diffvox_jax.cli', 'evaluate', '--checkpoint', str(mini_checkpoint),
             '--dataset', 'mir1k', '--split', 'validation', '--data-dir', str(mir1k_data), '--steps', '2',
             '--runs', '2', '--label', 'mini', '--out', str(out)]
  result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
                          check=False, timeout=300)
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['tracks'] == list(CLIPS)
  assert list(summary['systems']) == ['model', 'mixture', 'oracle_irm']
  assert summary['systems']['model']['runs'] == 2 and summary['systems']['model']['label'] == 'mini'
  markdown = (out / 'summary.md').read_text()
  assert '| mini | 2 |' in markdown and '| IRM oracle | 1 |' in markdown and markdown in result.stdout

  config = inference.read_config(out)
  tracks = list(pipeline.tracks(config, 'mir1k', 'validation', data_dir=mir1k_data))
  mixture_usdr = [metrics.usdr(t.vocals, t.mixture) for t in tracks]
  assert summary['systems']['mixture']['metrics']['usdr']['median'] == pytest.approx(np.median(mixture_usdr))
  irm = summary['systems']['oracle_irm']['metrics']
  mix = summary['systems']['mixture']['metrics']
  assert irm['usdr']['median'] > mix['usdr']['median'] and irm['SDR']['median'] > mix['SDR']['median']

  runs = [files.read_json(results.result_path(out / 'model', run, CLIPS[0])) for run in range(2)]
  assert [r['run'] for r in runs] == [0, 1] and runs[0]['usdr'] != runs[1]['usdr']  # different seeds.
  assert runs[0]['settings']['sampler']['steps'] == 2 and runs[0]['settings']['sampler']['eta'] == 0.4
  vocal_frames = runs[0]['targets'][0]['frames']
  assert runs[0]['targets'][0]['name'] == 'vocals' and vocal_frames[0]['duration'] == 1.0
  assert set(vocal_frames[0]['metrics']) == {'SDR', 'SIR', 'SAR', 'ISR'}

  # Resuming: everything is on disk, so nothing is estimated again (the model is never even compiled).
  before = {p: p.stat().st_mtime_ns for p in out.rglob('run*/*.json')}
  config, params = inference.load_for_inference(mini_checkpoint)
  config.sampler.steps = 2
  again = evaluate.evaluate_model(config, params, iter(tracks), out, dataset='mir1k', split='validation', runs=2,
                                  label='mini', checkpoint=str(mini_checkpoint.resolve()), progress=False)
  assert {p: p.stat().st_mtime_ns for p in out.rglob('run*/*.json')} == before
  assert again['systems']['model']['metrics'] == summary['systems']['model']['metrics']

  # The page: two clips, so the best and the worst (the median is one of them), each re-separated with run 0's key:
  # the written estimate scores what run 0 stored.
  page = out / 'index.html'
  assert f'listen: open {page}' in result.stdout
  page_checks.check_page(page, tmp_path / 'page.png', players=6, images=2)
  text = page.read_text()
  assert text.count('class="sortable"') == 1 and '<h2>best: ' in text and '<h2>worst: ' in text
  stored = {name: files.read_json(results.result_path(out / 'model', 0, name))['usdr']['vocals'] for name in CLIPS}
  for track in tracks:
    estimate, _ = audio.read_audio(out / 'listen' / track.name / 'estimate.wav')
    assert metrics.usdr(track.vocals, estimate) == pytest.approx(stored[track.name], abs=1e-3)  # float files
    both_runs = [files.read_json(results.result_path(out / 'model', run, track.name))['usdr']['vocals']
                 for run in range(2)]
    assert f'data-value="{float(np.mean(both_runs))!r}"' in text  # the per-track table: the mean over runs


def test_examples_are_the_best_median_and_worst_track_each_once():
  assert evaluate.pick_examples({'a': 1.0, 'b': 5.0, 'c': 3.0, 'd': -2.0}) == [
      ('best', 'b'), ('median', 'a'), ('worst', 'd')]
  assert evaluate.pick_examples({'a': 1.0, 'b': 5.0}) == [('best', 'b'), ('worst', 'a')]
  assert evaluate.pick_examples({'a': 1.0}) == [('best', 'a')]
