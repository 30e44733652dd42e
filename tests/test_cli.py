"""The `diffvox` command line as a user meets it: help, quiet runs, one-line errors and exit codes, Ctrl-C, the
output folder, the demucs-style flags, `diffvox models`, and the Python API against the command's output."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import page_checks
import pytest
import random_models
import soundfile as sf
from absl import flags

from diffvox_jax import api, cli
from diffvox_jax.config import load_config

REPO = pathlib.Path(__file__).resolve().parent.parent
RATE = 8000  # the miniature model's rate (stereo)
MINI_OVERRIDES = random_models.MINI_MODEL + (
    f'data.sample_rate={RATE}', 'data.segment=1024',
    'sampler.chunk=4096', 'sampler.steps=2', 'sampler.batch_size=2', 'sampler.cutoff_hz=1000.0')
ABSL_INFO = ('I1', 'I0')  # absl's info lines start with I<month><day>


@pytest.fixture(scope='module')
def mini(tmp_path_factory) -> pathlib.Path:
  return random_models.write_random_checkpoint(tmp_path_factory.mktemp('mini'), load_config('cpu_tiny', MINI_OVERRIDES))


@pytest.fixture(scope='module')
def env() -> dict[str, str]:
  """One CPU device; every command shares the suite's compilation cache (conftest.py)."""
  return dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_backend_optimization_level=0',
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))


def diffvox(*args, env, cwd, expect: int | None = 0) -> subprocess.CompletedProcess:
  result = subprocess.run([sys.executable, '-m', 'diffvox_jax.cli', *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False)
  if expect is not None:
    assert result.returncode == expect, result.stderr[-3000:]
  return result


def song(path: pathlib.Path, seconds: float = 1.5, rate: int = RATE, channels: int = 2, level: float = 0.3):
  noise = np.random.default_rng(len(str(path))).uniform(-level, level, (int(seconds * rate), channels))
  sf.write(path, noise.astype(np.float32), rate, subtype='FLOAT' if path.suffix == '.wav' else 'PCM_24')
  return path


def diffvox_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.strip()]


# --- help ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('command', list(cli.COMMANDS))
def test_every_command_has_its_own_help(command, capsys):
  before = set(flags.FLAGS)
  try:
    cli.main(['diffvox', command, '--help'])
  finally:
    for name in set(flags.FLAGS) - before:  # the next command defines its own flags afresh.
      delattr(flags.FLAGS, name)
  text = capsys.readouterr().out
  lines = text.splitlines()
  assert lines[0].startswith(f'usage: diffvox {command} ') and lines[2] and not lines[2].startswith('diffvox')
  examples = lines[lines.index('examples:') + 1:]
  assert len(examples) == 2 and all(line.startswith('  diffvox ') for line in examples)
  assert '--[no]verbose' in text and '-h, --help' in text and 'Try --helpfull' not in text
  if command == 'separate':  # grouped, with defaults, and nothing from absl, orbax or tfds.
    for group in ('output:', 'model:', 'sampler:', 'chunking:'):
      assert group in lines
    assert '-o, --out' in text and 'Default: separated.' in text and '-n, --model' in text
    assert '--only_check_args' not in text and 'tfds' not in text


def test_short_help_exits_zero(env, tmp_path):
  result = diffvox('separate', '-h', env=env, cwd=tmp_path)
  assert result.stdout.startswith('usage: diffvox separate [flags] INPUT...') and not result.stderr


DEMO_SPY = """
import json, sys
from diffvox_jax import cli, demo
demo.run_demo = lambda out, **choices: print(json.dumps([out, choices]))
demo.request_host_devices = lambda: None
cli.main(sys.argv[1:])
"""


def test_demo_passes_its_config_name_and_overrides_to_the_demo(env, tmp_path):
  result = subprocess.run([sys.executable, '-c', DEMO_SPY, 'diffvox', 'demo', '--out', 'o', '--num-songs', '6',
                           '--max-seconds', '8', '--config.train.num_steps=20', '--config.data.segment=2048'],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.splitlines()[-1]) == ['o', {
      'config_name': 'demo', 'num_songs': 6, 'max_seconds': 8.0, 'seed': 0,
      'overrides': ['train.num_steps=20', 'data.segment=2048']}]


# --- mistakes are one line, exit status 2 -----------------------------------------------------------------------


@pytest.mark.parametrize('args, fragment', [
    (('train', '--config', 'cpu_tiny', '--config.model.nonexistent=1', '--workdir', 'run'),
     '--config.model.nonexistent: no such config field'),
    (('separate', 'x.wav', '--samples', '0'), 'flag --samples=0: 0 is not a positive integer'),
    (('separate', 'x.wav', '--filename', '{track}.{ext}'), '--filename: filename template'),
    (('separate', 'x.wav', '-n', 'no_such_model'), '--model no_such_model: no such packaged model'),
    (('separate', 'x.wav', '--nosuchflag'), 'Unknown command line flag'),
    (('demo', '--config.train.num_stepz=3'), '--config.train.num_stepz: no such config field'),
    (('demo', '--num-songs', '2'), 'flag --num-songs=2: 2 is not integer >= 3'),
])
def test_command_line_mistakes_are_one_line(args, fragment, env, tmp_path):
  (tmp_path / 'x.wav').write_bytes(b'')
  result = diffvox(*args, env=env, cwd=tmp_path, expect=2)
  lines = diffvox_lines(result.stderr)
  assert len(lines) == 1 and lines[0].startswith('diffvox: ') and fragment in lines[0], result.stderr


def test_the_output_folder_is_checked_before_the_model_loads(env, tmp_path):
  (tmp_path / 'taken').write_text('a file')
  song(tmp_path / 'a.wav')
  result = diffvox('separate', 'a.wav', '-o', 'taken', '--checkpoint', tmp_path / 'missing', env=env, cwd=tmp_path,
                   expect=2)
  assert diffvox_lines(result.stderr) == ['diffvox: --out taken: is a file, not a folder']


def test_an_empty_output_folder_is_not_left_behind(env, tmp_path, mini):
  (tmp_path / 'bad.wav').write_text('not audio')
  result = diffvox('separate', 'bad.wav', 'missing.wav', '--checkpoint', mini, env=env, cwd=tmp_path, expect=1)
  assert diffvox_lines(result.stderr)[-1] == 'diffvox: 2 of 2 inputs failed'
  assert not (tmp_path / 'separated').exists()


# --- separating -------------------------------------------------------------------------------------------------


def test_default_output_quiet_logs_no_snowball_no_duplicates_stale_temps_removed(env, tmp_path, mini):
  songs = tmp_path / 'songs'
  songs.mkdir()
  song(songs / 'a.wav')
  song(songs / 'b.flac', channels=1, rate=16000)
  stale = tmp_path / 'separated' / 'a' / '.vocals.wav.0123456789ab.tmp'  # left by a `kill -9`.
  stale.parent.mkdir(parents=True)
  stale.write_bytes(b'partial')
  first = diffvox('separate', 'songs', 'songs/a.wav', '--checkpoint', mini, env=env, cwd=tmp_path)
  assert not any(line.startswith(cli_info) for line in first.stderr.splitlines() for cli_info in ABSL_INFO)
  assert 'taken by' not in first.stderr and len(first.stdout.splitlines()) == 2  # a.wav once, b.flac once.
  written = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / 'separated').rglob('*'))
  assert written == ['separated/a', 'separated/a/instrumental.wav', 'separated/a/vocals.wav', 'separated/b',
                     'separated/b/instrumental.wav', 'separated/b/vocals.wav']
  # Into a folder inside the input folder, twice: the second run does not separate the first run's outputs.
  for _ in range(2):
    again = diffvox('separate', 'songs', '-o', 'songs/out', '--checkpoint', mini, env=env, cwd=tmp_path)
  assert len(again.stdout.splitlines()) == 2 and '(replaced existing files)' in again.stdout
  assert sorted(p.name for p in (songs / 'out').iterdir()) == ['a', 'b']
  skipped = diffvox('separate', 'songs', '-o', 'songs/out', '--skip-existing', '--checkpoint', mini, env=env,
                    cwd=tmp_path)
  assert skipped.stdout.count('skipped, its outputs exist') == 2
  verbose = diffvox('separate', 'songs/a.wav', '-o', 'v', '--verbose', '--device', 'cpu', '--checkpoint', mini,
                    env=env, cwd=tmp_path)
  assert 'diffvox: jax ' in verbose.stderr and 'cpu backend' in verbose.stderr


def test_html_writes_a_listening_page_of_every_input(env, tmp_path, mini):
  (tmp_path / 'my songs').mkdir()
  song(tmp_path / 'my songs' / 'first take.wav')
  song(tmp_path / 'my songs' / 'b.flac', rate=22050, channels=1)
  result = diffvox('separate', 'my songs', '--html', '--format', 'flac', '--checkpoint', mini, env=env,
                   cwd=tmp_path)
  page = tmp_path / 'separated' / 'index.html'
  assert f'listen: open {page}' in result.stdout
  text = page.read_text()
  assert text.count('<h2>') == 2 and 'first take' in text and 'ddim T=2' in text
  page_checks.check_page(page, tmp_path / 'page.png', players=6, images=2)  # input, vocals, instrumental each
  plain = diffvox('separate', 'my songs', '-o', 'plain', '--checkpoint', mini, env=env, cwd=tmp_path)
  assert 'listen:' not in plain.stdout and not (tmp_path / 'plain' / 'index.html').exists()


def test_format_filename_stem_and_level_warnings(env, tmp_path, mini):
  source = song(tmp_path / 'loud.wav', rate=44100, level=0.99)
  result = diffvox('separate', source, '-o', 'out', '--format', 'mp3', '--mp3-bitrate', '128', '--stem', 'vocals',
                   '--filename', '{stem}-{track}.{ext}', '--clip-mode', 'clamp', '--chunk-seconds', '5',
                   '--checkpoint', mini, env=env, cwd=tmp_path)
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['vocals-loud.mp3']
  decoded, rate = sf.read(tmp_path / 'out' / 'vocals-loud.mp3', dtype='float32', always_2d=True)
  assert rate == 44100 and decoded.shape == sf.read(source, always_2d=True)[0].shape
  assert 'is longer than the file (1.50 s)' in result.stderr
  instrumental = diffvox('separate', source, '-o', 'out2', '--stem', 'instrumental', '--checkpoint', mini,
                         env=env, cwd=tmp_path)
  assert sorted(p.name for p in (tmp_path / 'out2' / 'loud').iterdir()) == ['instrumental.wav']
  # The input is at 0.99 of full scale, so the instrumental of a random model goes beyond it.
  assert 'scaled by 0.' in instrumental.stderr and 'fit full scale' in instrumental.stderr
  clamped = diffvox('separate', source, '-o', 'out3', '--stem', 'instrumental', '--clip-mode', 'clamp',
                    '--checkpoint', mini, env=env, cwd=tmp_path)
  assert 'samples beyond full scale were clamped' in clamped.stderr


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_temp_files(env, tmp_path, mini):
  song(tmp_path / 'long.wav', seconds=600)
  # SIGINT at its default in the child: a pytest-xdist worker ignores it, and an ignored SIGINT is inherited.
  process = subprocess.Popen([sys.executable, '-m', 'diffvox_jax.cli', 'separate', 'long.wav', '--checkpoint', mini,
                              '--batch-size', '1'], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  deadline = time.monotonic() + 300
  while not list(tmp_path.glob('separated/long/.*.tmp')) and time.monotonic() < deadline:
    time.sleep(0.2)
  assert list(tmp_path.glob('separated/long/.*.tmp')), 'the separation never started writing'
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130 and diffvox_lines(stderr)[-1] == 'diffvox: interrupted', stderr
  assert 'Traceback' not in stderr
  assert not (tmp_path / 'separated').exists()  # no temp files, no empty folders.


def test_models_lists_the_packaged_models_and_model_picks_one(env, tmp_path):
  result = diffvox('models', env=env, cwd=tmp_path)
  rows = result.stdout.splitlines()
  assert rows[1].startswith('* mask_baseline_16k ') and any(r.startswith('  diffdmx_spectral_16k ') for r in rows)
  song(tmp_path / 'a.wav', rate=22050, channels=2)
  diffvox('separate', 'a.wav', '-n', 'mask_baseline_16k', '--stem', 'vocals', env=env, cwd=tmp_path)
  info = sf.info(tmp_path / 'separated' / 'a' / 'vocals.wav')
  assert (info.samplerate, info.channels, info.frames) == (22050, 2, int(1.5 * 22050))


# --- the Python API -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('rate, channels', [(44100, 2), (16000, 1)])
def test_api_matches_the_command_at_any_rate_and_channels(rate, channels, env, tmp_path, mini):
  source = song(tmp_path / 'song.wav', rate=rate, channels=channels)
  diffvox('separate', source, '-o', 'out', '--bits', '32f', '--seed', '5', '--checkpoint', mini, env=env,
          cwd=tmp_path)
  from_cli, cli_rate = sf.read(tmp_path / 'out' / 'song' / 'vocals.wav', dtype='float32', always_2d=True)
  mixture, _ = sf.read(source, dtype='float32')
  separator = api.Separator.from_pretrained(mini, seed=5)
  vocals, instrumental = separator.separate(mixture, rate)
  assert cli_rate == rate and vocals.shape == mixture.shape == instrumental.shape
  np.testing.assert_allclose(vocals.reshape(from_cli.shape), from_cli, atol=1e-4)
  np.testing.assert_allclose(vocals + instrumental, mixture, atol=1e-6)
  with pytest.raises(ValueError, match='sample_rate must be a positive integer'):
    separator.separate(mixture, None)
  with pytest.raises(ValueError, match="unknown sampler setting 'stepz'"):
    api.Separator.from_pretrained(mini, stepz=3)


def test_the_readme_python_example_runs(env, tmp_path):
  readme = (REPO / 'README.md').read_text()
  example = readme.split('```python\n', 1)[1].split('```', 1)[0]
  result = subprocess.run([sys.executable, '-c', example], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "'vocals': PosixPath('separated/song/vocals.flac')" in result.stdout
  for stem in ('vocals', 'instrumental'):
    info = sf.info(tmp_path / 'separated' / 'song' / f'{stem}.flac')
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 3 * 44100)


def test_train_puts_the_compilation_cache_in_the_workdir_unless_jax_is_told_where(monkeypatch, tmp_path):
  from diffvox_jax.commands import train

  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  config = load_config('cpu_tiny')
  assert train.compilation_cache_dir(config, str(tmp_path)) == str(tmp_path / 'xla_cache')
  config.train.compilation_cache = 'gs://bucket/xla'
  assert train.compilation_cache_dir(config, str(tmp_path)) == 'gs://bucket/xla'
  config.train.compilation_cache = ''
  assert train.compilation_cache_dir(config, str(tmp_path)) is None
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'shared'))
  assert train.compilation_cache_dir(load_config('cpu_tiny'), str(tmp_path)) is None  # JAX's setting stands
