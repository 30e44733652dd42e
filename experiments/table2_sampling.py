"""Table 2 of the paper: the sampling ablation (steps T, stochasticity eta, high-pass cut-off f_c of the
refinement noise) of one checkpoint, as median uSDR over tracks, with the paper's numbers beside ours.

By default the paper's 14 rows (`experiments/sweeps/table2.py`, zipped); `--full` runs the whole product
T {20, 50, 100} x eta {0, 0.2, 0.4, 0.8} x f_c {none, 600 Hz, 2 kHz, 5 kHz} (39 points: with eta = 0 no noise is
injected, so the cut-off is moot); `--steps 20,50` keeps only those T. Each point is a sweep point
(`experiments/sweep.py`: own folder, resumable); the baselines are scored once. Writes `OUT/table2.md` (the
paper's layout), `OUT/table2.json`, `OUT/table2.png` (uSDR against T, one line per eta / f_c; the paper's
numbers in a second panel) and the sweep's `OUT/results.{md,json}`. The paper's Table 2 is uSDR only, so museval
is off unless `--museval` (then `--workers N` computes it in N processes beside the sampler).

Small scale on CPU (a tiny checkpoint; the MIR-1K dev singers of ../shared/data, split `validation`):

    diffvox prepare --dataset mir1k --manual-dir ../shared/data/mir1k --data-dir data_cache --config cpu_tiny
    python -m experiments.table2_sampling --checkpoint runs/tiny --dataset mir1k --split validation \\
        --data-dir data_cache --steps 20,50 --runs 1 --max-tracks 8 --out results/table2_tiny

Full scale (the paper's protocol: MUSDB18-HQ test, 50 tracks, 5 runs per stochastic setting):

    diffvox prepare --dataset musdb18hq --manual-dir ~/data/musdb18hq --data-dir ~/tensorflow_datasets
    python -m experiments.table2_sampling --checkpoint runs/diffdmx_rt --dataset musdb18hq --split test \\
        --runs 5 --out results/table2

The paper's numbers (Diff-DMX-RT-extra, trained with ~400 h of private data; median uSDR in dB):

    T=20:  eta 0: 6.86 | eta 0.2: 6.85, 600 Hz 6.97, 2 kHz 7.36, 5 kHz 7.55 | eta 0.4, 5 kHz: 8.26
    T=50:  eta 0.2: 7.17 | eta 0.4: 7.25, 600 Hz 7.59, 2 kHz 8.64, 5 kHz 8.77 (best) | eta 0.8, 5 kHz: 8.33
    T=100: eta 0.4, 5 kHz: 8.52 | eta 0.8, 5 kHz: 7.20
"""

import itertools
import pathlib
import sys
from collections.abc import Sequence

from absl import app, flags

from diffvox_jax import files, flag_groups, results
from experiments import paper, plotting, sweep

FIELDS = ('sampler.steps', 'sampler.eta', 'sampler.cutoff_hz')
SWEEP_FILE = pathlib.Path(__file__).resolve().parent / 'sweeps' / 'table2.py'


def table2_sweep(full: bool = False, steps: Sequence[int] | None = None) -> sweep.Sweep:
  """The paper's 14 rows, or the whole product (`full`); optionally only the given step counts."""
  if full:
    points = [p for p in itertools.product(paper.TABLE2_STEPS, paper.TABLE2_ETAS, paper.TABLE2_CUTOFFS_HZ)
              if p[1] > 0 or p[2] == 0]
  else:
    grid = sweep.load_sweep(SWEEP_FILE)
    points = [tuple(point[name] for name in FIELDS) for point in grid.points()]
  if steps:
    points = [p for p in points if p[0] in steps]
  if not points:
    raise ValueError(f'no Table 2 point has steps in {list(steps)}')
  return sweep.Sweep(tuple(zip(FIELDS, zip(*points, strict=True), strict=True)), 'zip')


def paper_sdr(point: dict) -> float | None:
  """The paper's median uSDR at a point, or None where the paper has no such row."""
  for row in paper.TABLE2:
    if (row.steps, row.eta, row.cutoff_hz) == tuple(point[name] for name in FIELDS):
      return row.sdr
  return None


def _eta(value: float) -> str:
  return '✗' if value == 0 else f'{value:g}'


def _cutoff(value: float) -> str:
  return '✗' if value == 0 else (f'{value / 1000:g} kHz' if value >= 1000 else f'{value:g} Hz')


def table2_markdown(rows: Sequence[dict], baselines: dict) -> str:
  """The paper's layout (T, eta, f_c, SDR) with our numbers and the paper's side by side."""
  headers = ['T', 'η', 'f_c', 'uSDR (ours: median, mean ± std over runs)', 'median of run means',
             'SDR median (museval)', 'SIR median', 'uSDR (paper)']
  lines = []
  for row in rows:
    point, result = row['point'], row['result']
    lines.append([point['sampler.steps'], _eta(point['sampler.eta']), _cutoff(point['sampler.cutoff_hz']),
                  results.format_db(result['usdr'], result['usdr_runs_std']),
                  results.format_db(result['usdr_median']),
                  results.format_db(result['SDR_median']), results.format_db(result['SIR_median']),
                  results.format_db(paper_sdr(point))])
  paper_baselines = {'IRM oracle': paper.TABLE1[0].sdr}
  for label, values in baselines.items():
    lines.append([label, '–', '–', results.format_db(values['usdr']), '',
                  results.format_db(values['SDR_median']), results.format_db(values['SIR_median']),
                  results.format_db(paper_baselines.get(label))])
  note = ('uSDR in dB: the median over tracks of each run, mean ± std over runs (the paper\'s "mean of 5 '
          'evaluations"); beside it the median over tracks of the per-track run mean. Paper: Diff-DMX-RT-extra on '
          'MUSDB18-HQ test.\n\n')
  return note + results.markdown_table(headers, lines)


def write_table2(out: pathlib.Path, grid: sweep.Sweep, rows: Sequence[dict]) -> None:
  """`table2.md`, `table2.json`, `table2.png` and the sweep's own `results.{md,json}`."""
  baselines = sweep.baseline_numbers(rows)
  sweep.write_tables(out, grid, rows, baselines)
  files.write_json(out / 'table2.json', {
      'rows': [{**row['point'], **row['result'], 'paper_usdr': paper_sdr(row['point'])} for row in rows],
      'baselines': baselines})
  files.write_atomically(out / 'table2.md', table2_markdown(rows, baselines).encode())
  reference = [{'point': dict(zip(FIELDS, (r.steps, r.eta, r.cutoff_hz), strict=True)),
                'result': {'usdr': r.sdr}} for r in paper.TABLE2]
  plotting.plot_sweep(rows, grid.names, 'sampler.steps', out / 'table2.png', baselines=baselines,
                      reference_rows=reference, reference_title='paper (Diff-DMX-RT-extra, MUSDB18-HQ)',
                      title=f'this evaluation ({out.name})')


def define_flags() -> None:
  flag_groups.define_evaluation_flags(museval_default=True)
  flags.FLAGS.set_default('museval', False)  # the paper's Table 2 is uSDR only; BSS Eval of 14 x 5 runs is slow.
  flags.DEFINE_string('checkpoint', None, 'training workdir or exported model folder.')
  flags.DEFINE_bool('full', False, 'the whole product of T, eta and f_c instead of the paper\'s 14 rows.')
  flags.DEFINE_list('steps', None, 'only these step counts T (e.g. 20,50).')


def main(argv: Sequence[str]) -> None:
  FLAGS = flags.FLAGS
  out = sweep.output_folder(argv, 'table2', bool(FLAGS.checkpoint and FLAGS.out), '--checkpoint and --out are required')
  try:
    grid = table2_sweep(FLAGS.full, [int(s) for s in FLAGS.steps or ()])
    base, run_point = sweep.evaluate_action(FLAGS.checkpoint, baseline_dir=out / 'baselines',
                                            **flag_groups.evaluation_options())
    sweep.run_sweep(grid, base, run_point, out, on_point=lambda rows: write_table2(out, grid, rows))
  except (ValueError, TypeError, OSError) as error:
    sys.exit(f'table2: {error}')
  print((out / 'table2.md').read_text(), end='')


if __name__ == '__main__':
  define_flags()
  app.run(main)
