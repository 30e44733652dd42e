"""The demo's report, `OUT/report.md`: what ran, the scores next to the baselines, the files, the commands, the
timings (`write_report`), and how to separate one's own song (`own_song_commands`)."""

import datetime
import pathlib
import platform
from typing import TYPE_CHECKING

import jax
import ml_collections

from diffvox_jax import files, inference, plots, results, sampler
from diffvox_jax.models import parameter_counts
from diffvox_jax.train import loop

if TYPE_CHECKING:
  from diffvox_jax.demo import DemoResult


def write_report(result: 'DemoResult', config: ml_collections.ConfigDict, config_name: str, num_songs: int,
                 evaluate_command: str) -> None:
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
