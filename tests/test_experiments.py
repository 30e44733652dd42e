"""The sweep runner and the paper's tables: grids, resumable points, tables in the paper's layout and plots."""

import pathlib

import numpy as np
import pytest

from diffvox_jax.config import load_config
from experiments import paper, sweep, table1_models, table2_sampling

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def test_product_and_zip_grids():
  product = sweep.Sweep((('sampler.steps', (20, 50)), ('sampler.eta', (0.0, 0.4))), 'product')
  assert product.points() == [{'sampler.steps': s, 'sampler.eta': e} for s in (20, 50) for e in (0.0, 0.4)]
  zipped = sweep.Sweep((('sampler.steps', (20, 50)), ('sampler.eta', (0.4,))), 'zip')
  assert zipped.points() == [{'sampler.steps': 20, 'sampler.eta': 0.4}, {'sampler.steps': 50, 'sampler.eta': 0.4}]
  with pytest.raises(ValueError, match='different numbers'):
    sweep.Sweep((('a', (1, 2)), ('b', (1, 2, 3))), 'zip')
  with pytest.raises(ValueError, match='mode'):
    sweep.Sweep((('a', (1,)),), 'grid')


def test_command_line_sets_and_point_names():
  grid = sweep.sweep_from_sets(['sampler.steps=20,50', 'sampler.schedule=linear', 'sampler.cutoff_hz=0,5000.0'])
  assert grid.fields == (('sampler.steps', (20, 50)), ('sampler.schedule', ('linear',)),
                         ('sampler.cutoff_hz', (0, 5000.0)))
  assert sweep.point_name(grid.points()[-1]) == 'steps=50,schedule=linear,cutoff_hz=5000'
  assert sweep.point_name({'model.generator.channels': 8, 'model.conditioner.channels': 16}) == \
      'model.generator.channels=8,model.conditioner.channels=16'
  config = sweep.point_config(load_config('cpu_tiny'), {'sampler.steps': 7, 'sampler.cutoff_hz': 0})
  assert config.sampler.steps == 7 and config.sampler.cutoff_hz == 0.0
  with pytest.raises(ValueError, match='unknown config field'):
    sweep.point_config(load_config('cpu_tiny'), {'sampler.stepz': 7})
  with pytest.raises(ValueError, match='field=value1'):
    sweep.sweep_from_sets(['sampler.steps'])


def test_table2_grids_follow_the_paper():
  rows = table2_sampling.table2_sweep().points()
  assert [(p['sampler.steps'], p['sampler.eta'], p['sampler.cutoff_hz']) for p in rows] == \
      [(r.steps, r.eta, r.cutoff_hz) for r in paper.TABLE2]
  full = table2_sampling.table2_sweep(full=True).points()
  assert len(full) == 3 * (1 + 3 * 4)  # eta = 0 injects no noise: its cut-off is moot.
  assert len(table2_sampling.table2_sweep(steps=[20, 50]).points()) == 12
  assert table2_sampling.paper_sdr(rows[10]) == 8.77


def _fake_headline(config) -> dict:
  """A stand-in evaluation: uSDR grows with the steps and falls with eta (so the plot has real lines)."""
  value = np.log2(config.sampler.steps) - 2 * config.sampler.eta
  # The paper's statistic (`usdr`, over runs of the median) and the median of run means differ by 0.5 dB.
  return {'usdr': value, 'usdr_median': value - 0.5, 'usdr_mean': value, 'usdr_runs_mean': value,
          'usdr_runs_std': 0.1,
          'SDR_median': value - 1, 'SIR_median': value + 10, 'SAR_median': None, 'ISR_median': None, 'tracks': 2,
          'runs': 2}


def test_a_two_point_table2_sweep_writes_its_tables_and_plot(tmp_path):
  calls = []

  def run_point(config, point_dir):
    calls.append(point_dir.name)
    assert (point_dir / 'config.json').is_file()
    return _fake_headline(config)

  grid = table2_sampling.table2_sweep(steps=[100])
  base = load_config('cpu_tiny')
  rows = sweep.run_sweep(grid, base, run_point, tmp_path,
                         on_point=lambda rows: table2_sampling.write_table2(tmp_path, grid, rows))
  assert calls == ['steps=100,eta=0.4,cutoff_hz=5000', 'steps=100,eta=0.8,cutoff_hz=5000']
  table = (tmp_path / 'table2.md').read_text()
  assert '| 100 | 0.4 | 5 kHz | 5.84 ± 0.10 | 5.34 | 4.84 | 15.84 | 8.52 |' in table
  assert '| 100 | 0.8 | 5 kHz | 5.04 ± 0.10 |' in table and table.rstrip().endswith('| 7.20 |')
  assert (tmp_path / 'table2.png').read_bytes().startswith(PNG_SIGNATURE)
  assert sweep.files.read_json(tmp_path / 'results.json')['rows'][1]['point']['sampler.eta'] == 0.8
  assert 'steps=100' not in (tmp_path / 'results.md').read_text()  # the table has a column per swept field

  again = sweep.run_sweep(grid, base, run_point, tmp_path)
  assert len(calls) == 2 and again == rows  # resumed: nothing runs again


def test_sweep_evaluates_a_checkpoint_through_the_real_harness(tmp_path, mini_checkpoint, mir1k_data):
  base, run_point = sweep.evaluate_action(
      str(mini_checkpoint), dataset='mir1k', split='validation', data_dir=str(mir1k_data), runs=1, max_tracks=None,
      museval=False, with_baselines=True, baseline_dir=tmp_path / 'baselines')
  grid = sweep.sweep_from_sets(['sampler.eta=0.0,0.4'])
  rows = sweep.run_sweep(grid, base, run_point, tmp_path)
  baselines = sweep.baseline_numbers(rows)
  sweep.write_tables(tmp_path, grid, rows, baselines, plot_x='sampler.eta')
  assert [row['name'] for row in rows] == ['eta=0', 'eta=0.4']
  assert all(row['result']['tracks'] == 2 and np.isfinite(row['result']['usdr_median']) for row in rows)
  assert rows[0]['result']['usdr_median'] != rows[1]['result']['usdr_median']
  assert sorted(p.name for p in (tmp_path / 'baselines' / 'mixture' / 'run0').iterdir()) == ['Ani_1_01.json',
                                                                                               'Ani_2_01.json']
  assert baselines['IRM oracle']['usdr_median'] > baselines['Mixture (lower bound)']['usdr_median']
  table = (tmp_path / 'results.md').read_text()
  assert table.count('\n') == 2 + 2 + 2  # header, rule, two points, two baselines
  assert (tmp_path / 'results.png').read_bytes().startswith(PNG_SIGNATURE)
  assert (tmp_path / 'eta=0.4' / 'model' / 'run0' / 'Ani_1_01.json').is_file()


def test_table1_puts_our_numbers_in_the_paper_rows(tmp_path, mini_checkpoint, mir1k_data):
  models = table1_models.parse_models([f'Diff-DMX-RT-musdb={mini_checkpoint}', f'mini={mini_checkpoint}'])
  entries = table1_models.evaluate_models(models, tmp_path, dataset='mir1k', split='validation',
                                          data_dir=str(mir1k_data), runs=1, max_tracks=1, museval=False,
                                          with_baselines=True, sampler_overrides={'eta': 0.4})
  table1_models.write_table1(tmp_path, entries)
  lines = (tmp_path / 'table1.md').read_text().splitlines()
  ours = entries[0]['summary']['systems']
  rt_musdb = next(line for line in lines if line.startswith('| Diff-DMX-RT-musdb |'))
  assert f'| 5.38 | {ours["model"]["metrics"]["usdr"]["median"]:.2f} |' in rt_musdb
  assert '| 2 |' in rt_musdb  # our T replaces the paper's 50
  irm = next(line for line in lines if line.startswith('| IRM oracle |'))
  assert f'| 9.43 | {ours["oracle_irm"]["metrics"]["usdr"]["median"]:.2f} |' in irm
  assert any(line.startswith('| mini | ✓ | 2 |') for line in lines)
  assert lines[-1].startswith('| Mixture (lower bound) |')
  assert len([line for line in lines if line.startswith('| ') and '---' not in line]) == 1 + 9 + 2
  with pytest.raises(ValueError, match='given twice'):
    table1_models.parse_models(['a=x', 'a=y'])


def test_tuple_valued_points_resume(tmp_path):
  grid = sweep.sweep_from_sets(['model.conditioner.kernel_sizes=(5, 3, 3),(3, 3, 3)'])
  seen = []
  run_point = lambda config, point_dir: seen.append(config.model.conditioner.kernel_sizes) or {}
  sweep.run_sweep(grid, load_config('cpu_tiny'), run_point, tmp_path)
  sweep.run_sweep(grid, load_config('cpu_tiny'), run_point, tmp_path)
  assert seen == [(5, 3, 3), (3, 3, 3)]
  assert (tmp_path / 'kernel_sizes=(5, 3, 3)' / 'config.json').is_file()


def test_sweep_files_define_get_sweep(tmp_path):
  path = pathlib.Path(table2_sampling.SWEEP_FILE)
  assert sweep.load_sweep(path).mode == 'zip'
  bad = tmp_path / 'bad.py'
  bad.write_text('SWEEP = 1\n')
  with pytest.raises(ValueError, match='get_sweep'):
    sweep.load_sweep(bad)
