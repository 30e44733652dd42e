"""`make demo`: the whole job on a fresh machine, on synthetic songs, in minutes on two CPU cores.

    python -m diffvox_jax.demo --out demo_out

Stages, each the library call behind a `diffvox` command (printed as it runs, and listed in the report):

1. prepare: render `--num-songs` synthetic songs (`diffvox prepare --dataset synthetic`) into `OUT/data`; seeds
   split into train, validation and test (the last `max(1, N // 10)` seeds are the held-out test songs).
2. train: the `demo` config (`configs/demo.py`) for its `train.num_steps` steps into `OUT/run` (`diffvox train`),
   with a progress bar; the loss goes to `OUT/run/tensorboard`.
3. separate: every held-out test song, written as `OUT/held_out/mixtures/<song>.wav` (its true vocals beside it in
   `OUT/held_out/true_vocals/`), into `OUT/separated/<song>/{vocals,instrumental}.wav` (`diffvox separate`).
4. score: the uSDR of each written vocal file against the true vocals, next to the mixture as the estimate (the
   lower bound) and the oracle ideal ratio mask (an upper reference that knows the true stems): `OUT/scores.json`.
5. figures and report: `OUT/spectrograms.png` (mixture, estimate and true vocals of the first held-out song),
   `OUT/training_loss.png` (from the TensorBoard scalars) and `OUT/report.md` (numbers, commands, timings).

Running it again reuses what exists: the dataset (prepare is idempotent), the run (training resumes, and does
nothing once `train.num_steps` is reached) and the separated files (kept while the checkpoint step, the sampler
settings and the seed they were made with are unchanged); scores, figures and the report are recomputed.

`run_demo(out, ...)` takes the same choices as function arguments (the tests run it on a miniature budget).
"""

import dataclasses
import datetime
import os
import pathlib
import platform
import shlex
import sys
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from diffvox_jax import audio, baselines, evaluate, files, inference, plots, results, sampler, separate
from diffvox_jax import config as config_lib
from diffvox_jax.data import builders, pipeline
from diffvox_jax.models import parameter_counts
from diffvox_jax.train import loop

DEMO_CONFIG = 'demo'
NUM_SONGS = 24
HOST_DEVICES = 2
DATASET = 'synthetic'
TEST_SPLIT = 'test'
SCORES_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class DemoPaths:
  """Where the demo puts everything under its output folder."""

  out: pathlib.Path

  @property
  def data(self) -> pathlib.Path:
    return self.out / 'data'

  @property
  def run(self) -> pathlib.Path:
    return self.out / 'run'

  @property
  def mixtures(self) -> pathlib.Path:
    return self.out / 'held_out' / 'mixtures'

  @property
  def true_vocals(self) -> pathlib.Path:
    return self.out / 'held_out' / 'true_vocals'

  @property
  def separated(self) -> pathlib.Path:
    return self.out / 'separated'

  @property
  def scores(self) -> pathlib.Path:
    return self.out / 'scores.json'

  @property
  def spectrograms(self) -> pathlib.Path:
    return self.out / 'spectrograms.png'

  @property
  def training_loss(self) -> pathlib.Path:
    return self.out / 'training_loss.png'

  @property
  def report(self) -> pathlib.Path:
    return self.out / 'report.md'


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


def make_figures(paths: DemoPaths, track: pipeline.Track, output: dict[str, pathlib.Path]) -> None:
  """The spectrogram comparison of one song and the training curves."""
  estimate, _ = audio.read_audio(output['vocals'])
  plots.plot_spectrograms([('mixture', track.mixture), ('estimate (Diff-DMX demo model)', estimate),
                           ('true vocals', track.vocals)], track.sample_rate, paths.spectrograms,
                          title=f'held-out song {track.name}')
  plots.plot_training_curves(plots.read_metrics(paths.run / loop.METRICS_FILE), paths.training_loss,
                             title=f'demo training ({paths.run})')


def write_report(result: DemoResult, config: ml_collections.ConfigDict, config_name: str, num_songs: int) -> None:
  """`OUT/report.md`: what ran, the scores next to the baselines, the files, the commands and the timings."""
  paths, median = result.paths, result.median
  counts = parameter_counts(config)
  settings = sampler.SamplerSettings.from_config(config)
  scalars = plots.read_metrics(paths.run / loop.METRICS_FILE)
  final_loss = scalars['train/loss'][-1] if scalars.get('train/loss') else None
  rows = [[f'`{s["song"]}`', f'{s["seconds"]:.1f}', f'{s["usdr"]["model"]:.2f}', f'{s["usdr"]["mixture"]:.2f}',
           f'{s["usdr"]["oracle_irm"]:.2f}', f'{s["margin_over_mixture"]:+.2f}'] for s in result.songs]
  rows.append(['**median**', '', f'**{median["model"]:.2f}**', f'{median["mixture"]:.2f}',
               f'{median["oracle_irm"]:.2f}', f'**{median["margin_over_mixture"]:+.2f}**'])
  verdict = 'above' if median['margin_over_mixture'] > 0 else 'NOT above'
  timing_rows = [[stage, 'reused' if result.reused.get(stage) else 'ran', f'{seconds:.0f} s']
                 for stage, seconds in result.timings.items()]
  lines = [
      '# diffvox_jax demo',
      '',
      f'Written {datetime.datetime.now().isoformat(timespec="seconds")} on {platform.node()} '
      f'({platform.machine()}, {jax.devices()[0].platform}, {jax.device_count()} device(s)).',
      '',
      f'The `{config_name}` config ({counts["total"]:,} parameters, {config.data.sample_rate} Hz, '
      f'{config.data.segment} sample crops, batch {config.train.batch_size}) was trained for '
      f'{inference.latest_step(paths.run)} steps on {num_songs} synthetic songs '
      f'(train/validation/test split by seed), then separated the {len(result.songs)} held-out test song(s) it never '
      f'saw, sampling with {settings.steps} steps, eta {settings.eta:g}, noise cut-off {settings.cutoff_hz:g} Hz.'
      + (f' Final training loss: {final_loss[1]:.4f} at step {final_loss[0]}.' if final_loss else ''),
      '',
      '## Result: uSDR of the vocals (dB, higher is better)',
      '',
      results.markdown_table(['song', 'seconds', 'Diff-DMX demo', 'mixture (lower bound)', 'oracle IRM (upper ref.)',
                     'margin over mixture'], rows),
      '',
      f'The estimate is **{median["margin_over_mixture"]:+.2f} dB** {verdict} the mixture baseline (median over '
      f'{len(result.songs)} held-out song(s)). uSDR is the SDX23 global SDR of the whole song '
      '(`diffvox_jax.metrics.usdr`), computed on the written 16-bit vocal files; the oracle IRM '
      '(`diffvox_jax.baselines.oracle_irm`) uses the true stems and shows what a mask could reach.',
      '',
      '## Files',
      '',
      f'- `{paths.separated}/<song>/vocals.wav`, `instrumental.wav`: the separation (instrumental = mixture - vocals)',
      f'- `{paths.mixtures}/<song>.wav`, `{paths.true_vocals}/<song>.wav`: the held-out inputs and their true vocals',
      f'- `{paths.spectrograms}`: mixture, estimate and true vocals of `{result.songs[0]["song"]}`',
      f'- `{paths.training_loss}`: training and validation loss (from `{paths.run}/tensorboard`)',
      f'- `{paths.scores}`: the numbers above; `{paths.run}/`: config.json and checkpoints; `{paths.data}/`: dataset',
      '',
      '## Commands (what each stage ran, as `diffvox` commands)',
      '',
      '```sh',
      *result.commands.values(),
      '```',
      '',
      'The scores are computed in the demo process (`diffvox_jax.metrics.usdr` on the files above). The '
      'evaluation harness scores the same test split with its own sampling seed per song:',
      '',
      '```sh',
      f'diffvox evaluate --checkpoint {paths.run} --dataset {DATASET} --split {TEST_SPLIT} --data-dir {paths.data} '
      f'--runs 1 --nomuseval --out {paths.out / "evaluation"}',
      '```',
      '',
      '## Your own song',
      '',
      'Any format soundfile or ffmpeg reads, at any rate; the vocals and the instrumental land in `separated/<song>/`:',
      '',
      '```sh',
      *own_song_commands(paths),
      '```',
      '',
      '## Timings (this invocation)',
      '',
      results.markdown_table(['stage', 'status', 'wall time'], timing_rows),
      '',
  ]
  files.write_atomically(paths.report, '\n'.join(lines).encode())


def own_song_commands(paths: DemoPaths) -> list[str]:
  """How to separate a user's song: with the packaged pretrained model, and with the model this demo trained."""
  return ['.venv/bin/diffvox separate my_song.mp3 --out separated    # the pretrained model shipped in the package',
          f'.venv/bin/diffvox separate my_song.mp3 --checkpoint {paths.run} --out separated    # this demo\'s model']


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
  make_figures(paths, tracks[0], outputs[0])
  timings['score and report'] = time.perf_counter() - start
  result = DemoResult(paths, songs, median, timings, reused, commands)
  write_report(result, config, config_name, num_songs)
  for song in songs:
    print(f'   {song["song"]}: uSDR {song["usdr"]["model"]:.2f} dB (mixture {song["usdr"]["mixture"]:.2f}, '
          f'oracle IRM {song["usdr"]["oracle_irm"]:.2f})')
  print(f'   median margin over the mixture: {median["margin_over_mixture"]:+.2f} dB; report: {paths.report}')
  print('\nYour own song, in one line:\n   ' + '\n   '.join(own_song_commands(paths)))
  return result


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string('out', 'demo_out', 'output folder (dataset, run, separated audio, figures, report).')
  flags.DEFINE_string('config', DEMO_CONFIG, 'config name (configs/) or path.')
  flags.DEFINE_multi_string('override', [], 'config override `section.field=value` (repeatable).')
  flags.DEFINE_integer('num-songs', NUM_SONGS, 'synthetic songs to render (the last tenth are held out).')
  flags.DEFINE_float('max-seconds', None, 'cap on each song\'s length (default: full 20-35 s songs).')
  flags.DEFINE_integer('seed', 0, 'separation seed.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  request_host_devices()
  logging.set_verbosity(logging.WARNING)  # progress bars and stage lines, not every checkpoint write
  try:
    run_demo(FLAGS.out, config_name=FLAGS.config, overrides=FLAGS.override, num_songs=FLAGS['num-songs'].value,
             max_seconds=FLAGS['max-seconds'].value, seed=FLAGS.seed)
  except (ValueError, OSError, loop.TrainingDiverged) as error:
    print(f'demo: {error}', file=sys.stderr)
    raise SystemExit(1) from error


if __name__ == '__main__':
  define_flags()
  app.run(main)
