"""The demo end to end on a miniature budget (every promised output, reuse on a second run) and the TensorBoard
reader behind the loss figure."""

import json
import pathlib

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import page_checks
import pytest
import random_models

from diffvox_jax import audio, baselines, demo, demo_report, diffusion, files, inference, metrics, plots, sampler
from diffvox_jax.config import load_config
from diffvox_jax.models import build_model
from diffvox_jax.train import loop
from diffvox_jax.train import step as step_lib

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# A miniature of the demo config: 2 levels, no attention or transformer, 8 kHz, 3 training steps.
MINI_OVERRIDES = random_models.MINI_MODEL + (
    'data.sample_rate=8000', 'data.segment=1024', 'sampler.chunk=2048',
    'sampler.steps=2', 'sampler.batch_size=2', 'sampler.cutoff_hz=1000.0', 'train.batch_size=2',
    'train.num_steps=3', 'train.log_every=1', 'train.checkpoint_every=3', 'train.eval_every=3',
    'train.eval_batches=1')
MINI_SONGS = 3
MINI_SECONDS = 2.5


def _run_mini(out: pathlib.Path) -> demo.DemoResult:
  return demo.run_demo(out, overrides=MINI_OVERRIDES, num_songs=MINI_SONGS, max_seconds=MINI_SECONDS)


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory) -> tuple[pathlib.Path, demo.DemoResult]:
  out = tmp_path_factory.mktemp('demo') / 'demo_out'
  return out, _run_mini(out)


def _assert_png(path: pathlib.Path) -> None:
  assert path.read_bytes()[:8] == PNG_SIGNATURE, path
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.slow
def test_demo_writes_every_promised_output(demo_run):
  out, result = demo_run
  paths = demo.DemoPaths(out)
  assert len(result.songs) == 1  # 3 songs: one train, one validation, one held-out test seed.
  song = result.songs[0]['song']
  assert song.startswith('synthetic-000002')
  mixture, rate = audio.read_audio(paths.mixtures / f'{song}.wav')
  vocals, _ = audio.read_audio(paths.true_vocals / f'{song}.wav')
  assert rate == 8000 and mixture.shape == (round(MINI_SECONDS * rate), 2)
  estimate, estimate_rate = audio.read_audio(paths.separated / song / 'vocals.wav')
  instrumental, _ = audio.read_audio(paths.separated / song / 'instrumental.wav')
  assert estimate_rate == rate and estimate.shape == instrumental.shape == mixture.shape
  np.testing.assert_allclose(estimate + instrumental, mixture, atol=2e-4)  # 16-bit outputs.
  _assert_png(paths.spectrograms(song))
  _assert_png(paths.training_loss)

  # The scores against independent recomputations from the files.
  usdr = result.songs[0]['usdr']
  assert usdr['model'] == pytest.approx(metrics.usdr(vocals, estimate), abs=1e-6)
  assert usdr['mixture'] == pytest.approx(metrics.usdr(vocals, mixture), abs=1e-6)
  assert usdr['oracle_irm'] == pytest.approx(metrics.usdr(vocals, baselines.oracle_irm(mixture, vocals)), abs=1e-3)
  stored = json.loads(paths.scores.read_text())
  assert stored['median']['margin_over_mixture'] == pytest.approx(usdr['model'] - usdr['mixture'])

  report = paths.report.read_text()
  assert f'{usdr["model"]:.2f}' in report and f'{usdr["mixture"]:.2f}' in report
  assert f'{result.median["margin_over_mixture"]:+.2f} dB' in report
  for command in result.commands.values():
    assert command in report
  for command in [*demo_report.own_song_commands(paths.run), demo.evaluate_command(paths)]:
    assert command in report
  assert result.commands['train'].startswith('diffvox train --config demo --workdir ')
  assert '--config.train.num_steps=3' in result.commands['train']
  assert inference.latest_step(paths.run) == 3

  # The page: four players and the song's figure, the loss figure; every link resolves; it renders in Chromium.
  dom = page_checks.check_page(paths.page, out / 'page.png', players=4, images=2)
  assert f'{usdr["model"]:.2f}' in dom and result.commands['train'].replace("'", '&#x27;') in paths.page.read_text()


@pytest.mark.slow
def test_demo_rerun_reuses_data_run_and_separation(demo_run):
  out, _ = demo_run
  paths = demo.DemoPaths(out)
  song_dir = next(paths.separated.iterdir())
  stamp = (song_dir / 'vocals.wav').stat().st_mtime_ns
  checkpoints = sorted(p.name for p in (paths.run / 'checkpoints').iterdir())
  again = _run_mini(out)
  assert again.reused == {'prepare': True, 'train': True, 'separate': True}
  assert (song_dir / 'vocals.wav').stat().st_mtime_ns == stamp
  assert sorted(p.name for p in (paths.run / 'checkpoints').iterdir()) == checkpoints
  assert again.songs == demo_run[1].songs


def test_demo_commands_quote_paths_and_list_overrides(tmp_path):
  paths = demo.DemoPaths(tmp_path / 'my out')
  commands = demo.demo_commands(paths, 'demo', ['train.num_steps=5'], 24, 8.0, 3)
  assert commands['prepare'] == (f"diffvox prepare --dataset synthetic --num-songs 24 --max-seconds 8 --config demo "
                                 f"--config.train.num_steps=5 --data-dir '{paths.data}'")
  assert commands['separate'].endswith(f"--out '{paths.separated}' --seed 3")


def _oracle_network() -> sampler.Network:
  """Conditions on the mixture as given and predicts the v whose x0 estimate is exactly that mixture."""

  def denoise(params, x_sigma, sigma, features):
    alpha, beta = (value[:, None, None] for value in diffusion.alpha_beta(sigma))
    return (alpha * x_sigma - features) / beta

  return sampler.Network(lambda params, mixture: mixture, denoise)


@pytest.mark.parametrize('data_scale', [1.0, 10.0])
def test_sampler_scales_the_mixture_in_and_the_estimate_out(data_scale):
  mixture = jax.random.normal(jax.random.key(0), (2, 256, 2)) * 0.05
  settings = sampler.SamplerSettings(steps=3, eta=0.4, cutoff_hz=1000.0, sample_rate=8000, num_samples=2,
                                     data_scale=data_scale)
  estimate = sampler.sample(_oracle_network(), settings, None, mixture, jax.random.key(1))
  np.testing.assert_allclose(estimate, mixture, atol=1e-6)


def test_sampler_scales_an_estimate_to_refine():
  initial = jax.random.normal(jax.random.key(0), (1, 256, 2)) * 0.05
  keep = sampler.Network(lambda params, mixture: mixture, lambda params, x, sigma, features: jnp.zeros_like(x))
  settings = sampler.SamplerSettings(steps=1, sample_rate=8000, sigma_start=1e-6, data_scale=10.0)
  refined = sampler.sample(keep, settings, None, initial, jax.random.key(1), initial)
  np.testing.assert_allclose(refined, initial, atol=1e-4)  # scaled in and out; noise weight 1.6e-6.


def test_train_loss_with_data_scale_is_the_loss_of_scaled_audio():
  scaled = load_config('demo', MINI_OVERRIDES + ('diffusion.data_scale=10.0',))
  plain = load_config('demo', MINI_OVERRIDES + ('diffusion.data_scale=1.0',))
  model = build_model(scaled)
  batch = {'vocals': jax.random.normal(jax.random.key(0), (2, 1024, 2)) * 0.05,
           'mixture': jax.random.normal(jax.random.key(1), (2, 1024, 2)) * 0.1}
  params = model.init(jax.random.key(2), batch['vocals'], jnp.ones((2,)), batch['mixture'])['params']
  loss_scaled = step_lib.make_loss_fn(model, scaled)(params, batch, jax.random.key(3))[1]
  loss_plain = step_lib.make_loss_fn(model, plain)(params, {k: v * 10.0 for k, v in batch.items()},
                                                   jax.random.key(3))[1]
  for name, value in loss_plain.items():
    np.testing.assert_allclose(loss_scaled[name], value, rtol=1e-5, err_msg=name)


def test_read_metrics_reads_what_the_training_loop_logs_later_values_winning(tmp_path):
  path = tmp_path / loop.METRICS_FILE
  for step in range(1, 6):
    files.append_json_line(path, {'step': step, 'train/loss': 1.0 / step})
  files.append_json_line(path, {'step': 5, 'eval/loss': 0.25})
  files.append_json_line(path, {'step': 4, 'train/loss': 0.3})  # a resumed run logs step 4 again.
  scalars = plots.read_metrics(path)
  assert [s for s, _ in scalars['train/loss']] == [1, 2, 3, 4, 5]
  np.testing.assert_allclose([v for _, v in scalars['train/loss']], [1.0, 0.5, 1 / 3, 0.3, 0.2])
  assert scalars['eval/loss'] == [(5, 0.25)]
  assert plots.read_metrics(tmp_path / 'no_run_yet.jsonl') == {}
  plots.plot_training_curves(scalars, tmp_path / 'loss.png')
  _assert_png(tmp_path / 'loss.png')


def test_read_metrics_skips_a_cut_last_line_and_rejects_a_damaged_one(tmp_path):
  path = tmp_path / loop.METRICS_FILE
  for step in range(3):
    files.append_json_line(path, {'step': step, 'train/loss': float(step)})
  text = path.read_text()
  path.write_text(text[:-5])  # a writer killed mid-line: the last point is not there.
  assert [s for s, _ in plots.read_metrics(path)['train/loss']] == [0, 1]
  path.write_text(text.replace('"step": 1', '"step": 1,,'))
  with pytest.raises(ValueError, match=f'{path}:2: not valid JSON'):
    plots.read_metrics(path)


def test_spectrogram_db_peaks_at_a_sine_frequency():
  rate = 8000
  time = np.arange(rate) / rate
  tone = np.stack([np.sin(2 * np.pi * 1000 * time)] * 2, axis=1)
  freqs, times, power = plots.spectrogram_db(tone, rate)
  assert freqs[np.argmax(power[:, len(times) // 2])] == pytest.approx(1000, abs=rate / plots.SPECTROGRAM_N_FFT)
