"""Stored evaluation results: one JSON per (system, run, track), their aggregation, and the summary tables.

Layout under a system's results folder (files written atomically, so an interrupted evaluation resumes):

    <results_dir>/run<k>/<track>.json   {'track', 'system', 'run', 'settings', 'usdr': {'vocals', 'accompaniment'},
                                         'targets': [...museval's layout...], 'estimate_seconds', ...}

Statistics (`summarize`), for each metric m of the vocals (uSDR of the whole track; museval SDR/SIR/SAR/ISR as the
median over the 1 s frames of a track, NaN frames ignored):

- `median_runs_mean` / `median_runs_std`: the mean / population std over runs of the per-run median over tracks:
  the paper's statistic ("mean of 5 evaluations" of the median over tracks), the headline of every table;
- `median` / `mean`: the median / mean over tracks of the per-track value averaged over runs, shown beside it
  (with one run, `median` equals `median_runs_mean`).
"""

import pathlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from diffvox_jax import files, metrics

SUMMARY_METRICS = ('usdr',) + metrics.BSS_METRICS
STATISTICS = ('vocals only. usdr: SDX23 global SDR of the whole track; SDR/SIR/SAR/ISR: museval v4, median over 1 s '
              'frames. median_runs_mean/std: mean/std over runs of the median over tracks (the paper\'s statistic, the '
              'headline); median/mean: over tracks of the per-track value averaged over runs. dB.')


def track_filename(name: str) -> str:
  """A file name for a track name (path separators and control characters replaced)."""
  return re.sub(r'[\\/\x00-\x1f]', '_', name).strip() or '_'


def result_path(results_dir: pathlib.Path, run: int, track_name: str) -> pathlib.Path:
  return pathlib.Path(results_dir) / f'run{run}' / f'{track_filename(track_name)}.json'


def _vocal_values(record: dict) -> dict[str, float]:
  """The summary metrics of one result: vocal uSDR and the frame medians of museval's vocal scores."""
  values = {'usdr': record['usdr']['vocals']}
  vocal_targets = [t for t in record.get('targets', []) if t['name'] == 'vocals']
  for name in metrics.BSS_METRICS:
    values[name] = metrics.frame_median(vocal_targets[0]['frames'], name) if vocal_targets else float('nan')
  return values


def _or_nan(statistic, values: np.ndarray) -> float:
  """`statistic` of the finite entries of `values`, NaN when there are none."""
  defined = values[np.isfinite(values)]
  return float(statistic(defined)) if defined.size else float('nan')


def metric_statistics(values: np.ndarray) -> dict:
  """Statistics of one metric from `(runs, tracks)` values (NaN where undefined); see the module docstring."""
  per_track = np.array([_or_nan(np.mean, column) for column in values.T])
  per_run_median = np.array([_or_nan(np.median, row) for row in values])
  return {
      'median': metrics.finite_or_none(_or_nan(np.median, per_track)),
      'mean': metrics.finite_or_none(_or_nan(np.mean, per_track)),
      'median_runs_mean': metrics.finite_or_none(_or_nan(np.mean, per_run_median)),
      'median_runs_std': metrics.finite_or_none(_or_nan(np.std, per_run_median)),
      'per_run_median': [metrics.finite_or_none(value) for value in per_run_median],
      'tracks': int(np.sum(np.isfinite(per_track))),
  }


def summarize(system: Any, track_names: Sequence[str]) -> dict:
  """Aggregates the stored results of an `evaluate.System` over `track_names` and its runs."""
  values = {name: np.full((system.runs, len(track_names)), np.nan) for name in SUMMARY_METRICS}
  seconds = []
  for run in range(system.runs):
    for index, track_name in enumerate(track_names):
      record = files.read_json(result_path(system.results_dir, run, track_name))
      seconds.append(record['estimate_seconds'])
      for name, value in _vocal_values(record).items():
        values[name][run, index] = value
  return {
      'label': system.label,
      'runs': system.runs,
      'settings': system.settings,
      'results_dir': str(system.results_dir),
      'estimate_seconds_mean': float(np.mean(seconds)),  # the first model run includes compilation.
      'metrics': {name: metric_statistics(values[name]) for name in SUMMARY_METRICS},
  }


def per_track(system_summary: dict, track_names: Sequence[str]) -> dict[str, dict[str, float]]:
  """`{track: {metric: value}}`: each track's summary metrics averaged over the runs of a system of a summary
  (read back from its stored results; NaN where a metric is undefined, e.g. museval off)."""
  values = {}
  for name in track_names:
    records = [_vocal_values(files.read_json(result_path(pathlib.Path(system_summary['results_dir']), run, name)))
               for run in range(system_summary['runs'])]
    values[name] = {metric: _or_nan(np.mean, np.array([r[metric] for r in records])) for metric in SUMMARY_METRICS}
  return values


def format_db(value: float | None, std: float | None = None) -> str:
  """`5.38`, `5.38 ± 0.04`, or `–` for a missing value."""
  if value is None:
    return '–'
  return f'{value:.2f}' if std is None else f'{value:.2f} ± {std:.2f}'


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A GitHub-flavoured Markdown table."""
  lines = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join('---' for _ in headers) + '|']
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def summary_markdown(summary: dict) -> str:
  """The evaluation summary as a Markdown table, one row per system."""
  headers = ['system', 'runs', 'uSDR (paper: median, mean ± std over runs)', 'uSDR median of run means',
             'uSDR mean', 'SDR median', 'SIR median', 'SAR median']
  rows = []
  for system in summary['systems'].values():
    m = system['metrics']
    usdr = m['usdr']
    rows.append([system['label'], system['runs'], format_db(usdr['median_runs_mean'], usdr['median_runs_std']),
                 format_db(usdr['median']), format_db(m['usdr']['mean']),
                 format_db(m['SDR']['median']), format_db(m['SIR']['median']), format_db(m['SAR']['median'])])
  intro = (f'{summary["dataset"]} / {summary["split"]}: {len(summary["tracks"])} tracks. uSDR: SDX23 global SDR of '
           'the whole track; SDR/SIR/SAR: museval v4, median over a track\'s frames; all in dB. The headline is the '
           'paper\'s statistic: the median over tracks of each run, averaged over runs; the other columns are '
           'statistics over tracks of the per-track value averaged over runs.\n\n')
  return intro + markdown_table(headers, rows)


def write_summary(out_dir: str | pathlib.Path, summary: dict) -> None:
  """Writes `summary.json` and `summary.md` into `out_dir`."""
  out_dir = pathlib.Path(out_dir)
  files.write_json(out_dir / 'summary.json', summary)
  files.write_atomically(out_dir / 'summary.md', summary_markdown(summary).encode())


def headline(system_summary: dict) -> dict[str, float | int | None]:
  """The numbers a results table shows for one system of a summary, flat: `usdr` (the paper's statistic, the
  headline: mean over runs of the median over tracks, equal to `usdr_runs_mean`), `usdr_runs_std`, `usdr_median`
  and `usdr_mean` (over tracks of the run-averaged value), `SDR_median`, `SIR_median`, `SAR_median`,
  `ISR_median`, `tracks`, `runs`."""
  m = system_summary['metrics']
  row = {'usdr': m['usdr']['median_runs_mean'], 'usdr_median': m['usdr']['median'], 'usdr_mean': m['usdr']['mean'],
         'usdr_runs_mean': m['usdr']['median_runs_mean'], 'usdr_runs_std': m['usdr']['median_runs_std']}
  row.update({f'{name}_median': m[name]['median'] for name in metrics.BSS_METRICS})
  row.update(tracks=m['usdr']['tracks'], runs=system_summary['runs'])
  return row
