"""Table 1 of the paper: several checkpoints (model variants, training data) and the baselines on one split,
as median uSDR over tracks, in the paper's layout with the paper's rows and numbers beside ours.

Each `--model LABEL=CHECKPOINT` is evaluated with its own config's sampler settings (override them for all models
with `--steps/--eta/--cutoff-hz`) into `OUT/<LABEL>/` (resumable); the mixture and the oracle IRM are scored once
into `OUT/baselines/`. A label equal to a paper model name (`Diff-DMX-RT-musdb`, `Diff-DMX-extra`,
`Diff-DMX-RT-extra`) puts our numbers in that row; other labels get rows of their own. Writes `OUT/table1.md` and
`OUT/table1.json`.

Small scale on CPU (tiny checkpoints; the MIR-1K dev singers of ../shared/data, split `validation`):

    diffvox prepare --dataset mir1k --manual-dir ../shared/data/mir1k --data-dir data_cache --config cpu_tiny
    python -m experiments.table1_models --model tiny=runs/tiny --model tiny-plain=runs/tiny_plain \\
        --dataset mir1k --split validation --data-dir data_cache --runs 1 --max-tracks 8 --out results/table1_tiny

Full scale (MUSDB18-HQ test, 50 tracks; T=50, eta=0.4, f_c=5 kHz as the paper's best Table 2 setting):

    python -m experiments.table1_models --model Diff-DMX-RT-musdb=runs/diffdmx_rt \\
        --model Diff-DMX-musdb=runs/diffdmx_plain --dataset musdb18hq --split test --runs 5 \\
        --steps 50 --eta 0.4 --cutoff-hz 5000 --workers 12 --out results/table1

BSS Eval (the SIR column) costs about 50 s of CPU per 4-minute stereo track and run; `--workers N` computes it in N
processes while the model separates the next tracks.

The paper's Table 1 (median uSDR, dB, MUSDB18-HQ test): IRM oracle 9.43 (SIR 20.78); GAN-prior -0.44;
InstGlow 3.46; MSDM 3.64; Diff-DMX-RT-musdb 5.38; Diff-DMX-extra 6.00; Diff-DMX-RT-extra 8.77 (SIR 21.37);
HT-Demucs 7.93, with ~53 h extra data 9.37. See `experiments/paper.py`.
"""

import pathlib
import sys
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags

from diffvox_jax import config as config_lib
from diffvox_jax import evaluate, files, flag_groups, inference, results
from diffvox_jax.data import builders
from experiments import paper, sweep

HEADERS = ['Model', 'Generative?', 'T', '#Params', 'Extra data', 'SDR (paper)', 'uSDR median (ours)',
           'over runs: mean ± std', 'SIR (paper)', 'SIR median (ours)']


def parse_models(specs: Sequence[str]) -> list[tuple[str, str]]:
  """`LABEL=CHECKPOINT` strings -> [(label, checkpoint)], labels unique."""
  models = []
  for spec in specs:
    label, sep, path = spec.partition('=')
    if not sep or not label or not path:
      raise ValueError(f'--model {spec!r} is not of the form LABEL=CHECKPOINT')
    if label in dict(models):
      raise ValueError(f'--model label {label!r} given twice')
    models.append((label, path))
  return models


def _training_data(sources: str) -> str:
  """The paper's "Extra data" cell from `config.data.sources`."""
  names = [item.split(':')[0].strip() for item in sources.split(',') if item.strip()]
  return '✗' if names in (['musdb18hq'], ['musdb18']) else ', '.join(names)


def evaluate_models(models: Sequence[tuple[str, str]], out: pathlib.Path, *, dataset: str | None, split: str | None,
                    data_dir: str | None, runs: int | None, max_tracks: int | None, museval: bool,
                    with_baselines: bool, sampler_overrides: dict, workers: int = 1) -> list[dict]:
  """Evaluates every checkpoint (and the baselines, once per audio format); returns one entry per model with
  `label`, `steps`, `params`, `extra_data` and the evaluation `summary`."""
  entries = []
  for label, checkpoint in models:
    config, params = inference.load_for_inference(checkpoint)
    config = config_lib.with_sampler_overrides(config, sampler_overrides)
    audio_format = builders.config_name(config.data.sample_rate, config.data.channels)
    summary = evaluate.evaluate_split(
        config, params, out / label, dataset=dataset, split=split, data_dir=data_dir, max_tracks=max_tracks,
        runs=runs, museval=museval, with_baselines=with_baselines, baseline_dir=out / 'baselines' / audio_format,
        label=label, checkpoint=str(pathlib.Path(checkpoint).resolve()), workers=workers)
    entries.append({'label': label, 'checkpoint': checkpoint, 'steps': int(config.sampler.steps),
                    'params': int(sum(np.size(leaf) for leaf in jax.tree.leaves(params))),
                    'extra_data': _training_data(config.data.sources), 'summary': summary})
  return entries


def _millions(count: int) -> str:
  return f'{count / 1e6:.0f}M' if count >= 1e7 else f'{count / 1e6:.2f}M'


def baseline_headlines(entries: Sequence[dict]) -> dict[str, dict]:
  """`{'oracle_irm': ..., 'mixture': ...}` headline numbers from the first evaluation (where scored)."""
  if not entries:
    return {}
  systems = entries[0]['summary']['systems']
  return {name: results.headline(systems[name]) for name in ('oracle_irm', 'mixture') if name in systems}


def _ours(headline: dict) -> list[str]:
  return [results.format_db(headline['usdr'], headline['usdr_runs_std'] if headline['runs'] > 1 else None),
          results.format_db(headline['usdr_median']) if headline['runs'] > 1 else '',
          results.format_db(headline['SIR_median'])]


def table1_rows(entries: Sequence[dict]) -> list[list[str]]:
  """The paper's rows in its order with our numbers where we have them; then our other models and the mixture."""
  ours = {e['label']: e for e in entries}
  baselines = baseline_headlines(entries)
  rows = []
  for row in paper.TABLE1:
    generative = '–' if row.generative is None else ('✓' if row.generative else '✗')
    cells = [row.model, generative, row.steps or '–', row.params, row.extra_data, results.format_db(row.sdr)]
    if row.model in ours:
      entry = ours.pop(row.model)
      cells[2:5] = [entry['steps'], _millions(entry['params']), entry['extra_data']]
      headline = results.headline(entry['summary']['systems']['model'])
    else:
      headline = baselines.get('oracle_irm') if row.model == 'IRM oracle' else None
    mine = _ours(headline) if headline else ['–', '', '–']
    rows.append(cells + mine[:2] + [results.format_db(row.sir)] + mine[2:])
  for entry in ours.values():
    headline = results.headline(entry['summary']['systems']['model'])
    mine = _ours(headline)
    rows.append([entry['label'], '✓', entry['steps'], _millions(entry['params']), entry['extra_data'], '–']
                + mine[:2] + ['–'] + mine[2:])
  if 'mixture' in baselines:
    mine = _ours(baselines['mixture'])
    rows.append(['Mixture (lower bound)', '–', '–', 'N/A', 'N/A', '–'] + mine[:2] + ['–'] + mine[2:])
  return rows


def write_table1(out: pathlib.Path, entries: Sequence[dict]) -> None:
  """`table1.md` (the paper's layout) and `table1.json`."""
  tracks = entries[0]['summary']['tracks'] if entries else []
  where = f'{entries[0]["summary"]["dataset"]} / {entries[0]["summary"]["split"]}' if entries else ''
  note = (f'Ours: {where}, {len(tracks)} tracks; median uSDR over tracks (dB, per-track value averaged over runs); '
          '"over runs" is the mean ± std over runs of the median; SIR: museval v4, median over tracks of the '
          'median over 1 s frames. Paper: MUSDB18-HQ test.\n\n')
  files.write_atomically(out / 'table1.md', (note + results.markdown_table(HEADERS, table1_rows(entries)))
                                  .encode())
  files.write_json(out / 'table1.json', {
      'models': [{k: v for k, v in e.items() if k != 'summary'} | results.headline(e['summary']['systems']['model'])
                 for e in entries],
      'baselines': baseline_headlines(entries),
      'paper': [row._asdict() for row in paper.TABLE1]})


def define_flags() -> None:
  flag_groups.define_evaluation_flags(museval_default=True)
  flags.DEFINE_multi_string('model', [], 'LABEL=CHECKPOINT (repeatable): a training workdir or exported model.')
  flag_groups.define_sampler_flags()  # applied to every model.


def main(argv: Sequence[str]) -> None:
  FLAGS = flags.FLAGS
  out = sweep.output_folder(argv, 'table1', bool(FLAGS.model and FLAGS.out),
                            'at least one --model LABEL=CHECKPOINT and --out are required')
  try:
    entries = evaluate_models(parse_models(FLAGS.model), out, sampler_overrides=flag_groups.sampler_overrides(),
                              **flag_groups.evaluation_options())
    write_table1(out, entries)
  except (ValueError, TypeError, OSError) as error:
    sys.exit(f'table1: {error}')
  print((out / 'table1.md').read_text(), end='')


if __name__ == '__main__':
  define_flags()
  app.run(main)
