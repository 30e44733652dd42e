"""The README's sweep, table and refinement command lines, really run through their command-line entry points at
miniature scale (the miniature model and the two MIR-1K clips of `test_evaluate`; tiny step budgets).

Every command runs in its own process, as a user would start it, on one CPU device; all of them share one
persistent XLA compilation cache (a sampler compiled by one process is reused by the next) and compile without
LLVM optimisation: compiling, not running, is what these miniature runs spend their time on.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import random_models
import soundfile as sf

from diffvox_jax import files, inference, results
from diffvox_jax.data import builders

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
EVALUATION = ('--dataset', 'mir1k', '--split', 'validation', '--runs', '1', '--max-tracks', '1', '--nomuseval')
# The miniature model at one level: a train step of the two-level one takes twice as long to compile.
ONE_LEVEL = ('model.factors=(2,)', 'model.generator.blocks=(1,)', 'model.generator.attention=(False,)',
             'model.generator.inject=(True,)', 'model.conditioner.attention=(False,)',
             'model.generator.bottleneck_blocks=0')
TABLE2_RATE = 16000  # Table 2's high-pass cut-offs go up to 5 kHz: the model's rate must exceed 10 kHz.


@pytest.fixture(scope='module')
def env() -> dict[str, str]:
  """The environment of every command: CPU, the repository importable (`-m experiments...`), the suite's
  compilation cache (conftest.py)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_backend_optimization_level=0',
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
  return env


def run(args: list[str], env: dict[str, str], expect: int = 0, cwd: pathlib.Path = REPO) -> subprocess.CompletedProcess:
  """Runs a command line (in the repository root by default); fails the test, with its stderr, on another exit
  status."""
  result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
  assert result.returncode == expect, f'{" ".join(args)}\n{result.stderr[-3000:]}'
  return result


def python_module(module: str, *args: str) -> list[str]:
  return [sys.executable, '-m', module, *(str(a) for a in args)]


def diffvox(*args: str) -> list[str]:
  """The installed `diffvox` console script beside the interpreter (the one the README calls)."""
  script = pathlib.Path(sys.executable).with_name('diffvox')
  assert script.is_file(), f'{script}: the diffvox console script is not installed (pip install -e .)'
  return [str(script), *(str(a) for a in args)]


def markdown_rows(path: pathlib.Path) -> list[str]:
  """The body rows of the markdown table in `path` (no header, no rule)."""
  lines = [line for line in path.read_text().splitlines() if line.startswith('| ')]
  return [line for line in lines[1:] if not line.startswith('| ---')]


def test_sweep_evaluates_a_checkpoint_at_every_sampler_point(tmp_path, env, mini_checkpoint, mir1k_data):
  out = tmp_path / 'sampling'
  result = run(python_module('experiments.sweep', '--action', 'evaluate', '--checkpoint', mini_checkpoint,
                             *EVALUATION, '--data-dir', mir1k_data, '--set', 'sampler.steps=1,2',
                             '--set', 'sampler.eta=0,0.4', '--out', out, '--plot-x', 'sampler.steps'), env)
  rows = files.read_json(out / 'results.json')['rows']
  assert [row['point'] for row in rows] == [{'sampler.steps': s, 'sampler.eta': e} for s in (1, 2) for e in (0, 0.4)]
  assert all(row['result']['tracks'] == 1 and np.isfinite(row['result']['usdr_median']) for row in rows)
  table = markdown_rows(out / 'results.md')
  assert [line.split(' | ')[:2] for line in table[:4]] == [['| 1', '0'], ['| 1', '0.4'], ['| 2', '0'], ['| 2', '0.4']]
  assert [line.split(' | ')[0] for line in table[4:]] == ['| Mixture (lower bound)', '| IRM oracle']
  assert (out / 'results.png').read_bytes().startswith(PNG_SIGNATURE)
  assert (out / 'results.md').read_text() in result.stdout
  # Each point really sampled with its own settings.
  record = files.read_json(results.result_path(out / 'steps=1,eta=0.4' / 'model', 0, random_models.EVAL_CLIPS[0]))
  assert (record['settings']['sampler']['steps'], record['settings']['sampler']['eta']) == (1, 0.4)


def test_sweep_trains_every_point(tmp_path, env, mir1k_data):
  out = tmp_path / 'lr'
  budget = ('train.num_steps=2', 'train.batch_size=2', 'optim.warmup_steps=1', 'train.checkpoint_every=2',
            'train.eval_every=0', 'train.log_every=1', 'data.train_split=validation')
  overrides = [f'data.data_dir={mir1k_data}', 'data.sources=mir1k:1.0', *random_models.EVAL_MINI, *ONE_LEVEL, *budget]
  result = run(python_module('experiments.sweep', '--action', 'train', '--config', 'cpu_tiny',
                             '--set', 'optim.peak_lr=1e-3,3e-4',
                             *[arg for override in overrides for arg in ('--override', override)], '--out', out), env)
  for name, peak_lr in (('peak_lr=0.001', 1e-3), ('peak_lr=0.0003', 3e-4)):
    assert inference.latest_step(out / name) == 2
    config = inference.read_config(out / name)
    assert config.optim.peak_lr == peak_lr and config.data.sample_rate == random_models.EVAL_RATE
  rows = files.read_json(out / 'results.json')['rows']
  assert [(row['name'], row['result']['step']) for row in rows] == [('peak_lr=0.001', 2), ('peak_lr=0.0003', 2)]
  assert [line.split(' | ')[0] for line in markdown_rows(out / 'results.md')] == ['| 0.001', '| 0.0003']
  assert '| 0.0003 |' in result.stdout


def test_table1_command_writes_the_paper_layout(tmp_path, env, mini_checkpoint, mir1k_data):
  out = tmp_path / 'table1'
  run(python_module('experiments.table1_models', '--model', f'Diff-DMX-RT-musdb={mini_checkpoint}',
                    '--model', f'mini={mini_checkpoint}', *EVALUATION, '--data-dir', mir1k_data,
                    '--steps', '1', '--eta', '0.4', '--cutoff-hz', '1000', '--workers', '1', '--out', out), env)
  models = {entry['label']: entry for entry in files.read_json(out / 'table1.json')['models']}
  assert list(models) == ['Diff-DMX-RT-musdb', 'mini'] and models['mini']['steps'] == 1
  rows = markdown_rows(out / 'table1.md')
  assert len(rows) == 9 + 1 + 1  # the paper's rows, our other model, the mixture
  rt_musdb = next(row for row in rows if row.startswith('| Diff-DMX-RT-musdb |'))
  assert f'| 5.38 | {models["Diff-DMX-RT-musdb"]["usdr_median"]:.2f} |' in rt_musdb and '| 1 |' in rt_musdb
  assert rows[-2].startswith('| mini | ✓ | 1 |') and rows[-1].startswith('| Mixture (lower bound) |')


@pytest.fixture(scope='module')
def table2_model(tmp_path_factory, mini_checkpoint, mir1k_data) -> tuple[pathlib.Path, pathlib.Path]:
  """The miniature model at 16 kHz (an exported model is its config.json and params.msgpack; the network does not
  depend on the rate) and the first quarter second of the two clips prepared at that rate."""
  root = tmp_path_factory.mktemp('table2')
  model = root / 'model'
  model.mkdir()
  (model / inference.PARAMS_FILE).write_bytes((mini_checkpoint / inference.PARAMS_FILE).read_bytes())
  config = inference.read_config(mini_checkpoint)
  config.data.sample_rate = TABLE2_RATE
  inference.save_config(model, config)
  for source in (mir1k_data.parent / 'source').rglob('*.flac'):  # the clips `mir1k_data` cut
    audio, rate = sf.read(source)
    target = root / 'source' / source.relative_to(mir1k_data.parent / 'source')
    target.parent.mkdir(parents=True, exist_ok=True)
    sf.write(target, audio[:rate // 4], rate)
  builder = builders.make_builder('mir1k', root / 'data', TABLE2_RATE, 1, builders.canonical_options('mir1k'))
  builders.prepare(builder, root / 'source')
  return model, root / 'data'


def test_table2_command_writes_the_paper_layout(tmp_path, env, table2_model):
  model, data = table2_model
  out = tmp_path / 'table2'
  result = run(python_module('experiments.table2_sampling', '--checkpoint', model, *EVALUATION, '--data-dir', data,
                             '--steps', '100', '--out', out), env)
  rows = markdown_rows(out / 'table2.md')
  numbers = files.read_json(out / 'table2.json')['rows']
  assert [(row['sampler.steps'], row['sampler.eta'], row['paper_usdr']) for row in numbers] == [(100, 0.4, 8.52),
                                                                                                (100, 0.8, 7.20)]
  headline = results.format_db(numbers[0]['usdr'], numbers[0]['usdr_runs_std'])  # the paper's statistic first
  assert rows[0].startswith(f'| 100 | 0.4 | 5 kHz | {headline} |') and rows[0].endswith('| 8.52 |')
  assert rows[1].startswith('| 100 | 0.8 | 5 kHz |') and rows[1].endswith('| 7.20 |')
  assert [row.split(' | ')[0] for row in rows[2:]] == ['| Mixture (lower bound)', '| IRM oracle']
  assert (out / 'table2.png').read_bytes().startswith(PNG_SIGNATURE)
  assert (out / 'table2.md').read_text() in result.stdout


def read(path: pathlib.Path) -> tuple[np.ndarray, int]:
  return sf.read(path, dtype='float32', always_2d=True)


def test_separate_then_refine_the_estimate(tmp_path, env, mini_checkpoint, shared_data):
  """README "Sampler knobs": separate, then refine that estimate from sigma 0.4 (a stereo 16 kHz song for the mono
  8 kHz model: the outputs come back at the input's rate and channels)."""
  clip = shared_data / 'mir1k' / 'dev' / random_models.EVAL_CLIPS[0]
  vocals, rate = sf.read(clip / 'vocals.flac', dtype='float32')
  accompaniment, _ = sf.read(clip / 'accompaniment.flac', dtype='float32')
  song = np.stack([vocals + accompaniment, vocals + 0.5 * accompaniment], axis=1)[:rate]
  sf.write(tmp_path / 'song.wav', song, rate, subtype='FLOAT')
  sf.write(tmp_path / 'other.wav', np.flip(song, axis=0), rate, subtype='FLOAT')
  sf.write(tmp_path / 'short.wav', song[:rate // 2], rate, subtype='FLOAT')

  def separate(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    """`diffvox separate song.wav --checkpoint CKPT ...` in `tmp_path` (the README's relative paths)."""
    return run(diffvox('separate', 'song.wav', '--checkpoint', mini_checkpoint, *args), env, expect, cwd=tmp_path)

  # From pure noise, with the miniature model's own sampler settings (a README knob set to a value that differs
  # from them would change the noise run too, and `sep` would no longer be the refinement's pure-noise twin).
  separate('--out', 'sep', '--steps', '2', '--eta', '0.4', '--cutoff-hz', '1000', '--samples', '1')
  refined = separate('--out', 'sep2', '--refine', 'sep/song/vocals.wav', '--sigma-start', '0.4', '--clip-mode',
                     'clamp')  # the stems sum to the input where neither is clamped
  assert 'sep2/song/vocals.wav' in refined.stdout
  separate('--out', 'sep3', '--refine', 'other.wav', '--sigma-start', '0.4')

  estimate, estimate_rate = read(tmp_path / 'sep2' / 'song' / 'vocals.wav')
  instrumental, _ = read(tmp_path / 'sep2' / 'song' / 'instrumental.wav')
  assert estimate_rate == rate and estimate.shape == song.shape and np.all(np.isfinite(estimate))
  unclipped = (np.abs(estimate) < 0.999) & (np.abs(instrumental) < 0.999)  # 16-bit outputs clamp at full scale
  assert unclipped.mean() > 0.5
  np.testing.assert_allclose((estimate + instrumental)[unclipped], song[unclipped], atol=1e-4)
  from_noise = read(tmp_path / 'sep' / 'song' / 'vocals.wav')[0]
  from_other = read(tmp_path / 'sep3' / 'song' / 'vocals.wav')[0]
  assert np.max(np.abs(estimate - from_noise)) > 1e-2  # the same seed: the refinement path is used...
  assert np.max(np.abs(estimate - from_other)) > 1e-2  # ...and starts from the given estimate.

  for estimate_file in ('short.wav', 'missing.wav'):
    failed = separate('--out', 'bad', '--refine', estimate_file, '--sigma-start', '0.4', expect=1)
    errors = [line for line in failed.stderr.splitlines() if line.startswith('diffvox: ')]
    assert len(errors) == 2 and estimate_file in errors[0] and errors[1] == 'diffvox: 1 of 1 inputs failed', errors
    assert 'Traceback' not in failed.stderr
  assert not (tmp_path / 'bad').exists()
