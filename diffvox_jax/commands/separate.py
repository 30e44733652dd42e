"""`diffvox separate`: extract the vocals (and the instrumental) of audio files with a trained model.

    diffvox separate song.mp3 album/ --checkpoint runs/diffdmx_rt --out separated
    diffvox separate song.wav --checkpoint runs/tiny --out sep --steps 20 --eta 0.4 --cutoff-hz 5000 --samples 5
    diffvox separate song.wav --checkpoint runs/tiny --out sep2 --refine sep/song/vocals.wav --sigma-start 0.4

Each INPUT is an audio file (any format the audio module reads, any rate and channel count) or a folder, searched
recursively for audio files. `OUT/<name>/vocals.<format>` and `OUT/<name>/instrumental.<format>` are written
atomically at the input's rate and channel count; `<name>` is the file's stem, prefixed by its sub-folders for files
found in a folder. The checkpoint is a training workdir (its newest checkpoint, EMA parameters unless `--noema`)
or an exported model folder; its `config.json` gives the model and the default sampler settings, which the flags
below override. A bad input gets one line on stderr naming it; the others are still separated, and the exit
status is 1 if any failed.
"""

import pathlib
import sys

import jax
from absl import flags

from diffvox_jax import audio, sampler, separate
from diffvox_jax.commands import common
from diffvox_jax.train import checkpoint as checkpoint_lib

FLAGS = flags.FLAGS
AUDIO_SUFFIXES = ('.wav', '.flac', '.mp3', '.ogg', '.oga', '.opus', '.aif', '.aiff', '.m4a', '.mp4', '.aac', '.wma',
                  '.webm')


def define_flags() -> None:
  flags.DEFINE_string('checkpoint', None, 'training workdir, exported model folder (config.json beside it), or the '
                      'name of a packaged model (diffvox_jax/pretrained/NAME); default: the packaged default.')
  flags.DEFINE_string('out', None, 'output folder.')
  flags.DEFINE_bool('ema', True, 'use the EMA parameters of a training workdir (--noema: the raw parameters).')
  common.define_sampler_flags()
  flags.DEFINE_float('chunk-seconds', None, 'chunk length in seconds (rounded to a multiple of the down-sampling).')
  flags.DEFINE_float('overlap', None, 'overlap of neighbouring chunks, as a fraction of a chunk.')
  flags.DEFINE_integer('batch-size', None, 'chunks per sampler call.')
  flags.DEFINE_enum('format', 'wav', ['wav', 'flac'], 'output file format.')
  flags.DEFINE_enum('bits', '16', sorted(audio.WRITE_SUBTYPES), 'output sample format (32f: float, wav only).')
  flags.DEFINE_integer('seed', 0, 'random seed (the same seed gives the same output).')
  flags.DEFINE_string('refine', None, 'a vocal estimate of the (single) INPUT to refine instead of starting from '
                      'noise; needs --sigma-start below 1.')


def sampler_settings(config) -> sampler.SamplerSettings:
  """The config's sampler settings with the command-line overrides."""
  config = common.apply_sampler_overrides(config, common.sampler_overrides(), refining=FLAGS.refine is not None)
  return sampler.SamplerSettings.from_config(config)


def expand_inputs(inputs: list[str]) -> tuple[list[tuple[pathlib.Path, str]], list[str]]:
  """Files to separate with their output names, and one error line per input that yields none."""
  jobs, errors = [], []
  for argument in inputs:
    path = pathlib.Path(argument).expanduser()
    if path.is_dir():
      found = sorted(p for p in path.rglob('*') if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                     and not any(part.startswith('.') for part in p.relative_to(path).parts))
      if not found:
        errors.append(f'{path}: folder holds no audio files ({", ".join(AUDIO_SUFFIXES)})')
      jobs += [(p, p.relative_to(path).with_suffix('').as_posix()) for p in found]
    elif path.exists():
      jobs.append((path, path.stem))
    else:
      errors.append(f'{path}: no such file or folder')
  return jobs, errors


def _one_line(path: pathlib.Path, error: Exception) -> str:
  message = ' '.join(str(error).split())
  return message if message.startswith(str(path)) else f'{path}: {message}'


def main(argv: list[str]) -> None:
  inputs = argv[1:]
  if not inputs:
    common.fail('give at least one INPUT (an audio file or a folder of audio files)')
  if not FLAGS.out:
    common.fail('--out is required')
  if FLAGS.refine is not None and len(inputs) != 1:
    common.fail('--refine refines the estimate of a single INPUT')
  try:
    checkpoint = separate.resolve_checkpoint(FLAGS.checkpoint)
    config, params = checkpoint_lib.load_for_inference(checkpoint, use_ema=FLAGS.ema)
    settings = sampler_settings(config)
    if (FLAGS.refine is not None) != settings.refines:
      raise ValueError('--refine ESTIMATE and --sigma-start below 1 go together')
    chunk = None if FLAGS['chunk-seconds'].value is None else separate.chunk_length(config,
                                                                                   FLAGS['chunk-seconds'].value)
    separator = separate.Separator.for_model(config, params, settings, chunk=chunk, overlap=FLAGS.overlap,
                                             batch_size=FLAGS['batch-size'].value)
  except (ValueError, OSError) as error:
    common.fail(str(error))

  jobs, errors = expand_inputs(inputs)
  for line in errors:
    print(f'diffvox: {line}', file=sys.stderr)
  failures = len(errors)
  out = pathlib.Path(FLAGS.out).expanduser()
  used: dict[str, pathlib.Path] = {}
  rng = jax.random.key(FLAGS.seed)
  for path, name in jobs:
    if name in used:
      print(f'diffvox: {path}: output {out / name} is already taken by {used[name]}; separate it on its own',
            file=sys.stderr)
      failures += 1
      continue
    used[name] = path
    try:
      outputs = separate.separate_file(separator, path, out / name, rng=rng, file_format=FLAGS.format,
                                       bits=FLAGS.bits, initial=FLAGS.refine)
    except (ValueError, OSError) as error:
      print(f'diffvox: {_one_line(path, error)}', file=sys.stderr)
      failures += 1
      continue
    print(f'{path} -> {outputs.vocals}, {outputs.instrumental}')
  if failures:
    common.fail(f'{failures} of {len(jobs) + len(errors)} inputs failed', code=1)
