"""A generic sweep runner over ml-collections configs: `train` or `evaluate` every point of a grid.

A sweep names config fields and their values, as a sweep file (a Python file whose `get_sweep()` returns
`{'fields': {'sampler.steps': (20, 50), ...}, 'mode': 'product' | 'zip'}`, see `experiments/sweeps/`) or on the
command line (`--set sampler.steps=20,50 --set sampler.eta=0,0.4`, product unless `--mode zip`). Every point runs
in its own folder `OUT/<field>=<value>,...` holding its resolved `config.json`; a point whose `result.json`
exists is skipped, so a sweep resumes. All points' results are collected into `OUT/results.json` and
`OUT/results.md` (and `OUT/results.png` with `--plot-x FIELD`).

Evaluate a checkpoint at several sampler settings (the checkpoint's config is the base; the baselines are
scored once, in `OUT/baselines/`):

    python -m experiments.sweep --action evaluate --checkpoint runs/tiny --dataset mir1k --split validation \\
        --data-dir data_cache --set sampler.steps=20,50 --set sampler.eta=0,0.4 --runs 1 --max-tracks 4 \\
        --nomuseval --out sweeps/sampling --plot-x sampler.steps

Train a config at several settings (each point is a training workdir, resumable; `--override` sets fields of
every point without sweeping them; with `--dataset` every trained point is then evaluated like the above):

    python -m experiments.sweep --action train --config cpu_tiny --set optim.peak_lr=1e-3,3e-4 \\
        --override data.data_dir=data_cache --override data.sources=mir1k:1.0 \\
        --dataset mir1k --split validation --max-tracks 8 --runs 1 --out sweeps/lr
"""

import ast
import dataclasses
import importlib.util
import itertools
import json
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import app, flags

from diffvox_jax import config as config_lib
from diffvox_jax import evaluate, files, flag_groups, inference, results
from diffvox_jax.data import builders
from diffvox_jax.train import loop
from experiments import plotting

MODES = ('product', 'zip')
RESULT_FILE = 'result.json'
RunPoint = Callable[[ml_collections.ConfigDict, pathlib.Path], dict]  # (resolved config, point dir) -> results.
TABLE_COLUMNS = (('usdr', 'uSDR (median, mean over runs)'), ('usdr_median', 'uSDR median of run means'),
                 ('usdr_mean', 'uSDR mean'), ('SDR_median', 'SDR median'),
                 ('SIR_median', 'SIR median'))


@dataclasses.dataclass(frozen=True)
class Sweep:
  """Config fields (dotted names) and their values; `product` crosses them, `zip` pairs them up in order."""

  fields: tuple[tuple[str, tuple], ...]
  mode: str = 'product'

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'sweep mode {self.mode!r} is not one of {MODES}')
    if not self.fields or any(not values for _, values in self.fields):
      raise ValueError('a sweep needs at least one field, each with at least one value')
    lengths = {len(values) for _, values in self.fields if len(values) > 1}
    if self.mode == 'zip' and len(lengths) > 1:
      raise ValueError(f'zip sweep fields have different numbers of values: {dict(self.fields)}')

  @classmethod
  def from_dict(cls, spec: dict) -> 'Sweep':
    """From `{'fields': {name: values}, 'mode': ...}` (what a sweep file's `get_sweep()` returns)."""
    unknown = set(spec) - {'fields', 'mode'}
    if unknown:
      raise ValueError(f'unknown sweep keys {sorted(unknown)} (expected fields, mode)')
    return cls(tuple((name, tuple(values)) for name, values in spec['fields'].items()), spec.get('mode', 'product'))

  @property
  def names(self) -> list[str]:
    return [name for name, _ in self.fields]

  def points(self) -> list[dict[str, Any]]:
    """Every point as `{field: value}`; in zip mode a single value is repeated for every point."""
    if self.mode == 'product':
      return [dict(zip(self.names, values, strict=True)) for values in itertools.product(*dict(self.fields).values())]
    count = max(len(values) for _, values in self.fields)
    return [{name: values[i] if len(values) > 1 else values[0] for name, values in self.fields} for i in range(count)]


def load_sweep(path: str | pathlib.Path) -> Sweep:
  """Runs a sweep file's `get_sweep()`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f'{path}: no such sweep file')
  spec = importlib.util.spec_from_file_location(f'_sweep_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'{path}: a sweep file defines get_sweep()')
  return Sweep.from_dict(module.get_sweep())


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _split_top_level(text: str) -> list[str]:
  """Splits at commas outside brackets: `(5, 3),(3, 3)` -> [`(5, 3)`, `(3, 3)`]."""
  parts, depth, start = [], 0, 0
  for index, char in enumerate(text):
    depth += (char in '([{') - (char in ')]}')
    if char == ',' and depth == 0:
      parts.append(text[start:index])
      start = index + 1
  return parts + [text[start:]]


def sweep_from_sets(sets: Sequence[str], mode: str = 'product') -> Sweep:
  """From `field=v1,v2,...` strings (values parsed as Python literals, else kept as strings; tuples in
  parentheses)."""
  fields = []
  for item in sets:
    name, sep, values = item.partition('=')
    if not sep or not name:
      raise ValueError(f'--set {item!r} is not of the form field=value1,value2,...')
    fields.append((name.strip(), tuple(_literal(v.strip()) for v in _split_top_level(values))))
  return Sweep(tuple(fields), mode)


def _format_value(value: Any) -> str:
  return format(value, 'g') if isinstance(value, float) else str(value)


def point_name(point: dict[str, Any]) -> str:
  """`steps=20,eta=0.4`: leaf field names where they are unambiguous, dotted names otherwise."""
  leaves = [name.rsplit('.', 1)[-1] for name in point]
  keys = leaves if len(set(leaves)) == len(leaves) else list(point)
  return ','.join(f'{key}={_format_value(value)}' for key, value in zip(keys, point.values(), strict=True))


def point_config(base: ml_collections.ConfigDict, point: dict[str, Any]) -> ml_collections.ConfigDict:
  """A validated copy of `base` with the point's fields set."""
  config = config_lib.from_json(config_lib.to_json(base))
  config_lib.apply_overrides(config, [f'{name}={value!r}' for name, value in point.items()])
  return config_lib.validate(config)


def run_sweep(sweep: Sweep, base_config: ml_collections.ConfigDict, run_point: RunPoint, out_dir: str | pathlib.Path,
              *, on_point: Callable[[list[dict]], None] | None = None) -> list[dict]:
  """Runs every point not done yet and returns all rows `{'name', 'point', 'workdir', 'result'}`.

  Args:
    sweep: the grid.
    base_config: the config every point starts from.
    run_point: `(config, point_dir) -> flat dict of results` (the train or evaluate action).
    out_dir: the sweep folder.
    on_point: called with the rows so far after each point (to refresh tables while a long sweep runs).
  """
  out_dir = pathlib.Path(out_dir)
  points = sweep.points()
  configs = [point_config(base_config, point) for point in points]  # every point is valid before any runs
  rows = []
  for point, config in zip(points, configs, strict=True):
    name = point_name(point)
    point_dir = out_dir / name
    done = point_dir / RESULT_FILE
    if done.is_file():
      row = files.read_json(done)
      if row['point'] != json.loads(json.dumps(point)):  # JSON keeps tuples as lists
        raise ValueError(f'{done}: holds point {row["point"]}, not {point}')
    else:
      inference.save_config(point_dir, config)
      print(f'sweep point {len(rows) + 1}/{len(points)}: {name}', flush=True)
      row = {'name': name, 'point': point, 'workdir': str(point_dir), 'result': run_point(config, point_dir)}
      files.write_json(done, row)
    rows.append(row)
    if on_point is not None:
      on_point(rows)
  return rows


def table_markdown(sweep: Sweep, rows: Sequence[dict], baselines: dict | None = None) -> str:
  """One row per point: the swept fields, then uSDR and museval medians (and the baselines below)."""
  headers = sweep.names + [title for _, title in TABLE_COLUMNS]
  lines = [[_format_value(row['point'][name]) for name in sweep.names]
           + [results.format_db(row['result'].get(key)) for key, _ in TABLE_COLUMNS] for row in rows]
  for label, values in (baselines or {}).items():
    lines.append([label] + [''] * (len(sweep.names) - 1) + [results.format_db(values.get(k)) for k, _ in TABLE_COLUMNS])
  return results.markdown_table(headers, lines)


def write_tables(out_dir: str | pathlib.Path, sweep: Sweep, rows: Sequence[dict], baselines: dict | None = None,
                 plot_x: str | None = None) -> None:
  """`results.json`, `results.md` and, with `plot_x`, `results.png` (uSDR median against that field)."""
  out_dir = pathlib.Path(out_dir)
  files.write_json(out_dir / 'results.json', {'mode': sweep.mode, 'fields': dict(sweep.fields), 'rows': list(rows),
                                                'baselines': baselines or {}})
  files.write_atomically(out_dir / 'results.md', table_markdown(sweep, rows, baselines).encode())
  if plot_x is not None:
    plotting.plot_sweep(rows, sweep.names, plot_x, out_dir / 'results.png', baselines=baselines)


def evaluate_action(checkpoint: str, *, dataset: str | None, split: str | None, data_dir: str | None, runs: int | None,
                    max_tracks: int | None, museval: bool, with_baselines: bool, baseline_dir: pathlib.Path,
                    workers: int = 1, use_ema: bool = True) -> tuple[ml_collections.ConfigDict, RunPoint]:
  """The evaluate action: the checkpoint's config (the base of every point) and a point runner.

  The parameters are loaded once; each point evaluates them with its own config (sampler settings). The
  baselines' results go to `baseline_dir`, shared by all points, so they are computed once. `dataset` and
  `split` default to the checkpoint config's `eval.dataset` and `eval.split`.
  """
  base, params = inference.load_for_inference(checkpoint, use_ema=use_ema)
  dataset, split = dataset or base.eval.dataset, split or base.eval.split

  def run_point(config: ml_collections.ConfigDict, point_dir: pathlib.Path) -> dict:
    summary = evaluate.evaluate_split(
        config, params, point_dir, dataset=dataset, split=split, data_dir=data_dir, max_tracks=max_tracks,
        runs=runs, museval=museval, with_baselines=with_baselines, baseline_dir=baseline_dir, label=point_dir.name,
        checkpoint=str(pathlib.Path(checkpoint).resolve()), workers=workers)
    return results.headline(summary['systems']['model'])

  return base, run_point


def baseline_numbers(rows: Sequence[dict]) -> dict[str, dict]:
  """Headline numbers of the baselines (label -> numbers) from the points' evaluation summaries, if any."""
  for row in rows:
    for summary_path in (pathlib.Path(row['workdir']) / 'summary.json',
                         pathlib.Path(row['workdir']) / 'evaluation' / 'summary.json'):
      if summary_path.is_file():
        systems = files.read_json(summary_path)['systems']
        return {s['label']: results.headline(s) for name, s in systems.items() if name != 'model'}
  return {}


def train_action(*, dataset: str | None, split: str | None, data_dir: str | None, runs: int | None,
                 max_tracks: int | None, museval: bool, workers: int = 1) -> RunPoint:
  """The train action: trains the point's config in its folder (resuming), then evaluates it if `dataset` (the
  baselines once per audio format, in `OUT/baselines/`)."""
  def run_point(config: ml_collections.ConfigDict, point_dir: pathlib.Path) -> dict:
    loop.train_and_evaluate(config, point_dir)
    row = {'step': inference.latest_step(point_dir)}
    if dataset:
      trained, params = inference.load_for_inference(point_dir)
      audio_format = builders.config_name(trained.data.sample_rate, trained.data.channels)
      summary = evaluate.evaluate_split(
          trained, params, point_dir / 'evaluation', dataset=dataset, split=split, data_dir=data_dir,
          max_tracks=max_tracks, runs=runs, museval=museval, baseline_dir=point_dir.parent / 'baselines' /
          audio_format, label=point_dir.name, checkpoint=str(point_dir), workers=workers)
      row.update(results.headline(summary['systems']['model']))
    return row

  return run_point


def define_flags() -> None:
  flag_groups.define_evaluation_flags(museval_default=True)
  flags.DEFINE_enum('action', 'evaluate', ['evaluate', 'train'], 'what every point runs.')
  flags.DEFINE_string('sweep', None, 'sweep file (a Python file with get_sweep()).')
  flags.DEFINE_multi_string('set', [], 'field=v1,v2,...: a swept config field (repeatable).')
  flags.DEFINE_enum('mode', 'product', list(MODES), 'how --set fields combine.')
  flags.DEFINE_string('checkpoint', None, 'evaluate: training workdir or exported model folder.')
  flags.DEFINE_string('config', None, 'train: base config file or name from configs/.')
  flags.DEFINE_multi_string('override', [], 'field=value applied to the base config of every point, not swept '
                            '(e.g. data.data_dir=data_cache).')
  flags.DEFINE_string('plot-x', None, 'plot uSDR median against this swept field (results.png).')


def output_folder(argv: Sequence[str], program: str, ready: bool, requirement: str) -> pathlib.Path:
  """`--out` as a path, after a one-line exit for stray arguments or for missing flags (`ready` False, the message
  `requirement`)."""
  if len(argv) > 1:
    sys.exit(f'{program}: unexpected arguments: {" ".join(argv[1:])}')
  if not ready:
    sys.exit(f'{program}: {requirement}')
  return pathlib.Path(flags.FLAGS.out)


def main(argv: Sequence[str]) -> None:
  FLAGS = flags.FLAGS
  out = output_folder(argv, 'sweep', bool(FLAGS.out) and bool(FLAGS.sweep) != bool(FLAGS.set),
                      '--out and exactly one of --sweep FILE or --set field=values are required')
  try:
    sweep = load_sweep(FLAGS.sweep) if FLAGS.sweep else sweep_from_sets(FLAGS.set, FLAGS.mode)
    options = flag_groups.evaluation_options()
    if FLAGS.action == 'evaluate':
      if not FLAGS.checkpoint:
        sys.exit('sweep: --action evaluate needs --checkpoint')
      base, run_point = evaluate_action(FLAGS.checkpoint, baseline_dir=out / 'baselines', **options)
      config_lib.apply_overrides(base, FLAGS.override)
    else:
      if not FLAGS.config:
        sys.exit('sweep: --action train needs --config')
      base = config_lib.load_config(FLAGS.config, FLAGS.override)
      del options['with_baselines']  # a trained point is scored with the baselines once per audio format
      run_point = train_action(**{**options, 'split': options['split'] or base.eval.split})
    rows = run_sweep(sweep, base, run_point, out, on_point=lambda rows: write_tables(
        out, sweep, rows, baseline_numbers(rows), FLAGS['plot-x'].value))
  except (ValueError, TypeError, OSError) as error:
    sys.exit(f'sweep: {error}')
  print(table_markdown(sweep, rows, baseline_numbers(rows)), end='')


if __name__ == '__main__':
  define_flags()
  app.run(main)
