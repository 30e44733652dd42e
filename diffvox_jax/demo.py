"""The demo (`diffvox demo`, `make demo`): the whole job on a fresh machine, on synthetic songs, in minutes on two
CPU cores.

    diffvox demo --out demo_out

Stages, each the library call behind a `diffvox` command (printed as it runs, and listed in the report):

1. prepare: render `--num-songs` synthetic songs (`diffvox prepare --dataset synthetic`) into `OUT/data`; seeds
   split into train, validation and test (the last `max(1, N // 10)` seeds are the held-out test songs).
2. train: the `demo` config (`configs/demo.py`) for its `train.num_steps` steps into `OUT/run` (`diffvox train`),
   with a progress bar; the loss goes to `OUT/run/tensorboard`.
3. separate: every held-out test song, written as `OUT/held_out/mixtures/<song>.wav` (its true vocals beside it in
   `OUT/held_out/true_vocals/`), into `OUT/separated/<song>/{vocals,instrumental}.wav` (`diffvox separate`).
4. score: the uSDR of each written vocal file against the true vocals, next to the mixture as the estimate (the
   lower bound) and the oracle ideal ratio mask (an upper reference that knows the true stems): `OUT/scores.json`.
5. figures, report and page: `OUT/figures/<song>.png` (mixture, estimated vocals and instrumental, true vocals),
   `OUT/training_loss.png` (from the run's `metrics.jsonl`), `OUT/report.md` (numbers, commands, timings) and
   `OUT/index.html`, the same with audio players for every held-out song (`demo_report.py`, `pages.py`).

Running it again reuses what exists: the dataset (prepare is idempotent), the run (training resumes, and does
nothing once `train.num_steps` is reached) and the separated files (kept while the checkpoint step, the sampler
settings and the seed they were made with are unchanged); scores, figures, the report and the page are
recomputed.

`run_demo(out, ...)` takes the same choices as function arguments (the tests run it on a miniature budget).
"""

import dataclasses
import os
import pathlib
import shlex
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from diffvox_jax import audio, baselines, demo_report, evaluate, files, inference, plots, sampler, separate
from diffvox_jax import config as config_lib
from diffvox_jax.data import builders, pipeline
from diffvox_jax.train import loop

DEMO_CONFIG = 'demo'
NUM_SONGS = 24
HOST_DEVICES = 2
DATASET = 'synthetic'
TEST_SPLIT = 'test'
SCORES_FORMAT = 1


class DemoPaths:
  """Where the demo puts everything under its output folder `out`."""

  def __init__(self, out: str | os.PathLike):
    self.out = out = pathlib.Path(out)
    self.data, self.run, self.separated = out / 'data', out / 'run', out / 'separated'
    self.mixtures, self.true_vocals = out / 'held_out' / 'mixtures', out / 'held_out' / 'true_vocals'
    self.scores, self.training_loss = out / 'scores.json', out / 'training_loss.png'
    self.report, self.page = out / 'report.md', out / 'index.html'

  def spectrograms(self, song: str) -> pathlib.Path:
    return self.out / 'figures' / f'{song}.png'


@dataclasses.dataclass(frozen=True)
class DemoResult:
  """What `run_demo` produced: the per-song scores, the medians, stage timings and the commands."""

  paths: DemoPaths
  songs: list[dict]
  median: dict[str, float]
  timings: dict[str, float]
  reused: dict[str, bool]
  commands: dict[str, str]


def request_host_devices(count: int = HOST_DEVICES) -> None:
  """Asks XLA for `count` CPU devices so that the data-parallel train step keeps `count` cores busy (two
  devices on two cores ran faster than one, docs/benchmarks.md).

  Only effective before JAX starts its backends (its first computation), and never overrides an XLA_FLAGS that
  already sets the count.
  """
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' not in xla_flags:
    os.environ['XLA_FLAGS'] = f'{xla_flags} --xla_force_host_platform_device_count={count}'.strip()


def _overrides_as_flags(overrides: Sequence[str]) -> list[str]:
  return [f'--config.{override}' for override in overrides]


def prepare_command(config_name: str, overrides: Sequence[str], data_dir: pathlib.Path, num_songs: int,
                    max_seconds: float | None) -> str:
  """The `diffvox prepare` line that renders the synthetic songs (what `prepare_data` does)."""
  words = ['diffvox', 'prepare', '--dataset', DATASET, '--num-songs', str(num_songs)]
  if max_seconds is not None:
    words += ['--max-seconds', f'{max_seconds:g}']
  words += ['--config', config_name, *_overrides_as_flags(overrides), '--data-dir', str(data_dir)]
  return shlex.join(words)


def train_command(config_name: str, overrides: Sequence[str], data_dir: pathlib.Path, workdir: pathlib.Path) -> str:
  """The `diffvox train` line of a run (what `train_model` does)."""
  return shlex.join(['diffvox', 'train', '--config', config_name, '--workdir', str(workdir),
                     f'--config.data.data_dir={data_dir}', *_overrides_as_flags(overrides)])


def demo_commands(paths: DemoPaths, config_name: str, overrides: Sequence[str], num_songs: int,
                  max_seconds: float | None, seed: int) -> dict[str, str]:
  """The `diffvox` command lines equivalent to the demo's stages."""
  separate_words = ['diffvox', 'separate', str(paths.mixtures), '--checkpoint', str(paths.run), '--out',
                    str(paths.separated), '--seed', str(seed)]
  return {'prepare': prepare_command(config_name, overrides, paths.data, num_songs, max_seconds),
          'train': train_command(config_name, overrides, paths.data, paths.run),
          'separate': shlex.join(separate_words)}


def evaluate_command(paths: DemoPaths) -> str:
  """The `diffvox evaluate` line that scores the demo's model on the held-out test split."""
  return shlex.join(['diffvox', 'evaluate', '--checkpoint', str(paths.run), '--dataset', DATASET, '--split',
                     TEST_SPLIT, '--data-dir', str(paths.data), '--runs', '1', '--nomuseval', '--out',
                     str(paths.out / 'evaluation')])


def load_demo_config(paths: DemoPaths, config_name: str = DEMO_CONFIG,
                     overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The demo's resolved config: `config_name` with `overrides`, reading and writing data under `paths.data`."""
  config = config_lib.load_config(config_name, overrides)
  config.data.data_dir = str(paths.data)
  return config_lib.validate(config)


def prepare_data(config: ml_collections.ConfigDict, data_dir: pathlib.Path, num_songs: int,
                 max_seconds: float | None) -> bool:
  """Renders the synthetic songs into `data_dir` at the config's rate and channels unless they are there (as
  `diffvox prepare --dataset synthetic`); returns True when built now."""
  options = builders.canonical_options(DATASET, num_songs=num_songs, max_seconds=max_seconds)
  builder = builders.make_builder(DATASET, data_dir, config.data.sample_rate, config.data.channels, options)
  return builders.prepare(builder)


def train_model(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> bool:
  """Trains (or resumes) the run in `workdir` to `train.num_steps` (as `diffvox train`); False when a finished
  checkpoint was already there."""
  done = inference.latest_step(workdir)
  if done is not None and done >= config.train.num_steps:
    return False
  loop.train_and_evaluate(config, workdir)
  return True


def write_held_out(config: ml_collections.ConfigDict, paths: DemoPaths) -> list[pipeline.Track]:
  """The test split's tracks, each written (float wav, at the model's rate) as a mixture and its true vocals."""
  tracks = list(pipeline.tracks(config, DATASET, TEST_SPLIT))
  if not tracks:
    raise ValueError(f'{paths.data}: the {DATASET} dataset has no {TEST_SPLIT} songs')
  for folder in (paths.mixtures, paths.true_vocals):
    folder.mkdir(parents=True, exist_ok=True)
  for track in tracks:
    for folder, signal in ((paths.mixtures, track.mixture), (paths.true_vocals, track.vocals)):
      path = folder / f'{track.name}.wav'
      if not path.is_file():
        audio.write_audio(path, signal, track.sample_rate, bits='32f')
  return tracks


def separation_settings(config: ml_collections.ConfigDict, paths: DemoPaths, seed: int) -> dict:
  """What the separated files depend on; they are reused only while it is unchanged."""
  return {'checkpoint_step': inference.latest_step(paths.run), 'seed': seed,
          'sampler': dataclasses.asdict(sampler.SamplerSettings.from_config(config)),
          'chunk': int(config.sampler.chunk), 'overlap': float(config.sampler.overlap)}


def _separated_files(paths: DemoPaths, tracks: Sequence[pipeline.Track]) -> list[dict[str, pathlib.Path]]:
  return [separate.stem_paths(paths.separated / t.name) for t in tracks]


def separate_held_out(paths: DemoPaths, tracks: Sequence[pipeline.Track], settings: dict,
                      seed: int) -> tuple[list[dict[str, pathlib.Path]], bool]:
  """Separates every held-out mixture file with the run's EMA weights, as `diffvox separate` does (one key for
  every file); reuses existing outputs made with the same `settings`. Returns the outputs and whether it ran."""
  outputs = _separated_files(paths, tracks)
  complete = all(path.is_file() for output in outputs for path in output.values())
  if complete and paths.scores.is_file() and files.read_json(paths.scores).get('separation') == settings:
    return outputs, False
  config, params = inference.load_for_inference(paths.run)
  separator = separate.Separator.for_model(config, params)
  rng = jax.random.key(seed)
  for track, expected in zip(tracks, outputs, strict=True):
    separate.separate_file(separator, paths.mixtures / f'{track.name}.wav', expected, rng=rng)
  return outputs, True


def score_songs(tracks: Sequence[pipeline.Track], outputs: Sequence[dict[str, pathlib.Path]]) -> list[dict]:
  """uSDR (dB) of the written vocals, the mixture baseline and the oracle IRM for each song."""
  songs = []
  for track, output in zip(tracks, outputs, strict=True):
    estimate, rate = audio.read_audio(output['vocals'])
    if rate != track.sample_rate or estimate.shape != track.vocals.shape:
      raise ValueError(f'{output["vocals"]}: {estimate.shape} at {rate} Hz, expected {track.vocals.shape} at '
                       f'{track.sample_rate} Hz')
    systems = {'model': estimate, 'mixture': baselines.mixture_estimate(track.mixture),
               'oracle_irm': baselines.oracle_irm(track.mixture, track.vocals)}
    usdr = {name: evaluate.score_track(track, system_estimate, museval=False, window_s=1.0)['usdr']['vocals']
            for name, system_estimate in systems.items()}
    songs.append({'song': track.name, 'seconds': len(track.mixture) / track.sample_rate, 'usdr': usdr,
                  'margin_over_mixture': usdr['model'] - usdr['mixture'],
                  'vocals': str(output['vocals']), 'instrumental': str(output['instrumental'])})
  return songs


def median_scores(songs: Sequence[dict]) -> dict[str, float]:
  """Median over songs of each system's uSDR and of the margin over the mixture."""
  names = list(songs[0]['usdr'])
  medians = {name: float(np.median([song['usdr'][name] for song in songs])) for name in names}
  medians['margin_over_mixture'] = float(np.median([song['margin_over_mixture'] for song in songs]))
  return medians


def make_figures(paths: DemoPaths, tracks: Sequence[pipeline.Track], outputs: Sequence[dict[str, pathlib.Path]],
                 title: str) -> None:
  """Per song, the spectrograms of mixture, estimate, instrumental and true vocals on one scale; the training
  curves. `title` names the model and its sampler settings."""
  for track, output in zip(tracks, outputs, strict=True):
    estimate, _ = audio.read_audio(output['vocals'])
    instrumental, _ = audio.read_audio(output['instrumental'])
    plots.plot_spectrograms([('mixture', track.mixture), ('estimated vocals', estimate),
                             ('estimated instrumental', instrumental), ('true vocals', track.vocals)],
                            track.sample_rate, paths.spectrograms(track.name), title=f'{track.name}: {title}')
  plots.plot_training_curves(plots.read_metrics(paths.run / loop.METRICS_FILE), paths.training_loss,
                             title=f'demo training ({paths.run})')


def _stage(title: str, command: str | None = None) -> None:
  print(f'\n== {title}', flush=True)
  if command:
    print(f'   $ {command}', flush=True)


def run_demo(out: str | pathlib.Path, *, config_name: str = DEMO_CONFIG, overrides: Sequence[str] = (),
             num_songs: int = NUM_SONGS, max_seconds: float | None = None, seed: int = 0) -> DemoResult:
  """Runs (or resumes) the whole demo into `out`; see the module docstring.

  Args:
    out: output folder (created).
    config_name: config name or path (default `configs/demo.py`).
    overrides: `section.field=value` config overrides (e.g. `train.num_steps=10`).
    num_songs: synthetic songs to render (at least 3: train, validation and test seeds).
    max_seconds: caps each song's length (None: the full 20-35 s songs).
    seed: the separation seed.

  Returns:
    the scores, medians, timings and commands (also in `out/report.md` and `out/scores.json`).
  """
  paths = DemoPaths(pathlib.Path(out))
  config = load_demo_config(paths, config_name, overrides)
  commands = demo_commands(paths, config_name, overrides, num_songs, max_seconds, seed)
  timings, reused = {}, {}

  _stage(f'1/4 prepare {num_songs} synthetic songs', commands['prepare'])
  start = time.perf_counter()
  reused['prepare'] = not prepare_data(config, paths.data, num_songs, max_seconds)
  timings['prepare'] = time.perf_counter() - start

  _stage(f'2/4 train {config_name} for {config.train.num_steps} steps', commands['train'])
  start = time.perf_counter()
  reused['train'] = not train_model(config, paths.run)
  timings['train'] = time.perf_counter() - start

  _stage('3/4 separate the held-out songs', commands['separate'])
  start = time.perf_counter()
  tracks = write_held_out(config, paths)
  settings = separation_settings(config, paths, seed)
  outputs, ran = separate_held_out(paths, tracks, settings, seed)
  reused['separate'] = not ran
  timings['separate'] = time.perf_counter() - start

  _stage('4/4 score, plot and report')
  start = time.perf_counter()
  songs = score_songs(tracks, outputs)
  median = median_scores(songs)
  files.write_json(paths.scores, {'format': SCORES_FORMAT, 'separation': settings, 'songs': songs,
                                    'median': median})
  make_figures(paths, tracks, outputs, demo_report.model_title(config, config_name))
  timings['score and report'] = time.perf_counter() - start
  result = DemoResult(paths, songs, median, timings, reused, commands)
  demo_report.write_report(result, config, config_name, num_songs, evaluate_command(paths))
  demo_report.write_page(result, config, config_name, num_songs, evaluate_command(paths))
  for song in songs:
    print(f'   {song["song"]}: uSDR {song["usdr"]["model"]:.2f} dB (mixture {song["usdr"]["mixture"]:.2f}, '
          f'oracle IRM {song["usdr"]["oracle_irm"]:.2f})')
  print(f'   median margin over the mixture: {median["margin_over_mixture"]:+.2f} dB; report: {paths.report}')
  print(f'\nListen and look: open {paths.page.resolve()} in a browser')
  print('\nYour own song, in one line:\n   ' + '\n   '.join(demo_report.own_song_commands(paths.run)))
  return result
