"""The demo's report, `OUT/report.md`: what ran, the scores next to the baselines, the files, the commands, the
timings (`write_report`), and how to separate one's own song (`own_song_commands`)."""

import datetime
import pathlib
import platform
from typing import TYPE_CHECKING

import jax
import ml_collections

from diffvox_jax import files, inference, pages, plots, results, sampler
from diffvox_jax.models import parameter_counts
from diffvox_jax.train import loop

if TYPE_CHECKING:
  from diffvox_jax.demo import DemoResult


def model_title(config: ml_collections.ConfigDict, config_name: str) -> str:
  """The model and its sampler settings, for figure titles."""
  settings = sampler.SamplerSettings.from_config(config)
  return (f'{config_name} model, {settings.method} T={settings.steps}, eta {settings.eta:g}, '
          f'noise cut-off {settings.cutoff_hz:g} Hz')


def describe_run(result: 'DemoResult', config: ml_collections.ConfigDict, config_name: str, num_songs: int) -> str:
  """One paragraph: what was trained, on what, how long, and how it sampled."""
  counts = parameter_counts(config)
  settings = sampler.SamplerSettings.from_config(config)
  scalars = plots.read_metrics(result.paths.run / loop.METRICS_FILE)
  final_loss = scalars['train/loss'][-1] if scalars.get('train/loss') else None
  return (f'The {config_name} config ({counts["total"]:,} parameters, {config.data.sample_rate} Hz, '
          f'{config.data.segment} sample crops, batch {config.train.batch_size}) was trained for '
          f'{inference.latest_step(result.paths.run)} steps on {num_songs} synthetic songs '
          f'(train/validation/test split by seed), then separated the {len(result.songs)} held-out test song(s) it '
          f'never saw, sampling with {settings.steps} steps, eta {settings.eta:g}, noise cut-off '
          f'{settings.cutoff_hz:g} Hz.' + (f' Final training loss: {final_loss[1]:.4f} at step {final_loss[0]}.'
                                           if final_loss else ''))


def verdict(result: 'DemoResult') -> str:
  """The headline sentence: the median margin of the estimate over the mixture."""
  margin = result.median['margin_over_mixture']
  return (f'The estimate is {margin:+.2f} dB {"above" if margin > 0 else "NOT above"} the mixture baseline (median '
          f'over {len(result.songs)} held-out song(s)).')


def written_on() -> str:
  return (f'Written {datetime.datetime.now().isoformat(timespec="seconds")} on {platform.node()} '
          f'({platform.machine()}, {jax.devices()[0].platform}, {jax.device_count()} device(s)).')


def write_report(result: 'DemoResult', config: ml_collections.ConfigDict, config_name: str, num_songs: int,
                 evaluate_command: str) -> None:
  """`OUT/report.md`: what ran, the scores next to the baselines, the files, the commands and the timings."""
  paths, median = result.paths, result.median
  rows = [[f'`{s["song"]}`', f'{s["seconds"]:.1f}', f'{s["usdr"]["model"]:.2f}', f'{s["usdr"]["mixture"]:.2f}',
           f'{s["usdr"]["oracle_irm"]:.2f}', f'{s["margin_over_mixture"]:+.2f}'] for s in result.songs]
  rows.append(['**median**', '', f'**{median["model"]:.2f}**', f'{median["mixture"]:.2f}',
               f'{median["oracle_irm"]:.2f}', f'**{median["margin_over_mixture"]:+.2f}**'])
  timing_rows = [[stage, 'reused' if result.reused.get(stage) else 'ran', f'{seconds:.0f} s']
                 for stage, seconds in result.timings.items()]
  lines = [
      '# diffvox_jax demo',
      '',
      written_on(),
      '',
      describe_run(result, config, config_name, num_songs),
      '',
      '## Result: uSDR of the vocals (dB, higher is better)',
      '',
      results.markdown_table(['song', 'seconds', 'Diff-DMX demo', 'mixture (lower bound)', 'oracle IRM (upper ref.)',
                     'margin over mixture'], rows),
      '',
      f'{verdict(result)} uSDR is the SDX23 global SDR of the whole song (`diffvox_jax.metrics.usdr`), computed on '
      'the written 16-bit vocal files; the oracle IRM (`diffvox_jax.baselines.oracle_irm`) uses the true stems and '
      'shows what a mask could reach.',
      '',
      '## Files',
      '',
      f'- `{paths.separated}/<song>/vocals.wav`, `instrumental.wav`: the separation (instrumental = mixture - vocals)',
      f'- `{paths.mixtures}/<song>.wav`, `{paths.true_vocals}/<song>.wav`: the held-out inputs and their true vocals',
      f'- `{paths.page}`: all of it on one page, with audio players (open it in a browser)',
      f'- `{paths.spectrograms("<song>")}`: mixture, estimated vocals and instrumental, true vocals',
      f'- `{paths.training_loss}`: training and validation loss (from `{paths.run}/{loop.METRICS_FILE}`)',
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
      evaluate_command,
      '```',
      '',
      '## Your own song',
      '',
      'Any format soundfile or ffmpeg reads, at any rate; the vocals and the instrumental land in `separated/<song>/`:',
      '',
      '```sh',
      *own_song_commands(paths.run),
      '```',
      '',
      '## Timings (this invocation)',
      '',
      results.markdown_table(['stage', 'status', 'wall time'], timing_rows),
      '',
  ]
  files.write_atomically(paths.report, '\n'.join(lines).encode())


def own_song_commands(run: pathlib.Path) -> list[str]:
  """How to separate a user's song: with the packaged pretrained model, and with the model trained in `run`."""
  return ['.venv/bin/diffvox separate my_song.mp3 --out separated    # the pretrained model shipped in the package',
          f'.venv/bin/diffvox separate my_song.mp3 --checkpoint {run} --out separated    # this demo\'s model']


def write_page(result: 'DemoResult', config: ml_collections.ConfigDict, config_name: str, num_songs: int,
               evaluate_command: str) -> None:
  """`OUT/index.html`: per held-out song its players, spectrograms and scores; the loss, settings and commands."""
  paths = result.paths
  here = paths.out
  parts = [pages.paragraph(written_on()), pages.paragraph(describe_run(result, config, config_name, num_songs)),
           pages.paragraph(verdict(result)), pages.heading('uSDR of the vocals (dB, higher is better)'),
           pages.table(['song', 'seconds', 'estimate', 'mixture (lower bound)', 'oracle IRM (upper reference)',
                        'margin over the mixture'],
                       [[s['song'], s['seconds'], s['usdr']['model'], s['usdr']['mixture'], s['usdr']['oracle_irm'],
                         s['margin_over_mixture']] for s in result.songs], sortable=True)]
  for song in result.songs:
    name = song['song']
    parts += [pages.heading(f'{name}: estimate {song["usdr"]["model"]:.2f} dB, mixture {song["usdr"]["mixture"]:.2f} '
                            f'dB, oracle mask {song["usdr"]["oracle_irm"]:.2f} dB uSDR'),
              pages.players([('mixture', paths.mixtures / f'{name}.wav'),
                             ('estimated vocals', pathlib.Path(song['vocals'])),
                             ('estimated instrumental', pathlib.Path(song['instrumental'])),
                             ('true vocals', paths.true_vocals / f'{name}.wav')], here),
              pages.figure(paths.spectrograms(name), here, f'spectrograms of {name}')]
  settings = sampler.SamplerSettings.from_config(config)
  parts += [pages.heading('Training'), pages.figure(paths.training_loss, here, 'training and validation loss'),
            pages.heading('Settings'),
            pages.table(['setting', 'value'], [['config', config_name], ['sample rate (Hz)', config.data.sample_rate],
                                               ['channels', config.data.channels],
                                               ['training steps', inference.latest_step(paths.run)],
                                               ['sampler', settings.method], ['steps T', settings.steps],
                                               ['eta', settings.eta], ['noise cut-off (Hz)', settings.cutoff_hz],
                                               ['samples per chunk', settings.num_samples]]),
            pages.heading('Commands'), pages.code([*result.commands.values(), evaluate_command]),
            pages.heading('Your own song'), pages.code(own_song_commands(paths.run))]
  pages.write_page(paths.page, 'diffvox_jax demo', parts)
