"""`diffvox separate`: extract the vocals (and the instrumental) of audio files with a trained model.

    diffvox separate song.mp3
    diffvox separate album/ -o stems --format mp3 --stem vocals -n diffdmx_spectral_16k --steps 20

Each INPUT is an audio file (any format the audio module reads, any rate and channel count) or a folder, searched
recursively for audio files (the output folder itself is never searched). Each stem is written atomically to
OUT/<filename template> at the input's rate and channel count, `{track}/{stem}.{ext}` by default, where `{track}`
is the file's name without suffix, prefixed by its sub-folders for files found in a folder. The model is the
packaged default, another packaged model (`-n`, listed by `diffvox models`) or one's own (`--checkpoint`: a
training workdir, its EMA parameters unless `--noema`, or an exported model folder); its config gives the default
sampler settings, which the sampler flags override. A bad input gets one line on stderr naming it; the others are
still separated, and the exit status is 1 if any failed. `--html` also writes OUT/index.html, a page with audio
players and spectrograms of every input and its stems (opt-in: the spectrograms cost a few seconds per song).
"""

import os
import pathlib
import sys

import jax
from absl import flags
from tqdm import tqdm

from diffvox_jax import api, audio, flag_groups, inference, pages, separate
from diffvox_jax.commands import common

FLAGS = flags.FLAGS
USAGE = '[flags] INPUT...'
FLAG_GROUPS = (
    ('output', ('out', 'filename', 'stem', 'format', 'bits', 'mp3-bitrate', 'clip-mode', 'skip-existing', 'html')),
    ('model', ('model', 'checkpoint', 'ema', 'device')),
    ('sampler', tuple(flag for flag, _ in flag_groups.SAMPLER_FLAGS) + ('seed', 'refine')),
    ('chunking', ('chunk-seconds', 'overlap', 'batch-size')),
)
AUDIO_SUFFIXES = ('.wav', '.flac', '.mp3', '.ogg', '.oga', '.opus', '.aif', '.aiff', '.m4a', '.mp4', '.aac', '.wma',
                  '.webm')
STEM_CHOICES = {'both': separate.STEMS, 'vocals': ('vocals',), 'instrumental': ('instrumental',)}
DEVICES = ('cpu', 'gpu', 'tpu')


def define_flags() -> None:
  flags.DEFINE_string('out', api.DEFAULT_OUT, 'output folder.', short_name='o')
  flags.DEFINE_string('filename', separate.FILENAME_TEMPLATE, 'output path under OUT, from {track}, {stem} '
                      '(vocals or instrumental) and {ext}.')
  flags.DEFINE_enum('stem', 'both', list(STEM_CHOICES), 'the stems to write.')
  flags.DEFINE_enum('format', 'wav', ['wav', 'flac', 'mp3'], 'output file format.')
  flags.DEFINE_enum('bits', '16', sorted(audio.WRITE_SUBTYPES), 'wav and flac sample format (32f: float, wav only).')
  flags.DEFINE_enum('mp3-bitrate', str(audio.MP3_KBPS), [str(rate) for rate in audio.MP3_BITRATES],
                    'mp3 bitrate in kbit/s.')
  flags.DEFINE_enum('clip-mode', 'rescale', list(audio.CLIP_MODES), 'a stem beyond full scale: rescale (the '
                    'file divided by its peak) or clamp (the samples clipped).')
  flags.DEFINE_bool('skip-existing', False, 'skip inputs whose outputs all exist (else they are replaced).')
  flags.DEFINE_bool('html', False, 'also write OUT/index.html: players and spectrograms of every input and its '
                    'stems, to listen in a browser.')
  flags.DEFINE_string('model', None, 'a model shipped in the package (diffvox models lists them); default: the '
                      'packaged default.', short_name='n')
  flags.DEFINE_string('checkpoint', None, 'one\'s own model: a training workdir or an exported model folder.')
  flags.DEFINE_bool('ema', True, 'use the EMA parameters of a training workdir (--noema: the raw parameters).')
  flags.DEFINE_enum('device', None, list(DEVICES), 'where the model runs (default: the best device JAX finds).')
  flag_groups.define_sampler_flags()
  flags.DEFINE_integer('seed', 0, 'random seed (the same seed gives the same output).')
  flags.DEFINE_string('refine', None, 'a vocal estimate of the (single) INPUT to refine instead of starting from '
                      'noise; needs --sigma-start below 1.')
  flags.DEFINE_float('chunk-seconds', None, 'chunk length in seconds (rounded to a multiple of the down-sampling).',
                     lower_bound=0.0)
  flags.DEFINE_float('overlap', None, 'overlap of neighbouring chunks, as a fraction of a chunk.', lower_bound=0.0,
                     upper_bound=0.95)
  flags.DEFINE_integer('batch-size', None, 'chunks per sampler call.', lower_bound=1)


def warn(message: str) -> None:
  tqdm.write(f'diffvox: warning: {message}', file=sys.stderr)


def expand_inputs(inputs: list[str], out: pathlib.Path) -> tuple[list[tuple[pathlib.Path, str]], list[str]]:
  """Files to separate with their `{track}` names, and one error line per input that yields none. A file named
  twice (itself and through its folder) comes once; nothing inside `out` is an input."""
  jobs: dict[pathlib.Path, tuple[pathlib.Path, str]] = {}
  errors = []
  out = out.resolve()
  for argument in inputs:
    path = pathlib.Path(argument).expanduser()
    if path.is_dir():
      found = sorted(p for p in path.rglob('*') if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                     and not any(part.startswith('.') for part in p.relative_to(path).parts)
                     and not p.resolve().is_relative_to(out))
      if not found:
        errors.append(f'{path}: folder holds no audio files ({", ".join(AUDIO_SUFFIXES)}) outside the output '
                      f'folder')
      for file in found:
        jobs.setdefault(file.resolve(), (file, file.relative_to(path).with_suffix('').as_posix()))
    elif path.exists():
      if path.resolve().is_relative_to(out):
        errors.append(f'{path}: is inside the output folder {out}; move it out or choose another --out')
      else:
        jobs.setdefault(path.resolve(), (path, path.stem))
    else:
      errors.append(f'{path}: no such file or folder')
  return list(jobs.values()), errors


def check_output_folder(out: pathlib.Path) -> None:
  """A one-line failure, before the model loads, for an output folder that cannot be written."""
  if out.exists() and not out.is_dir():
    common.fail(f'--out {out}: is a file, not a folder')
  existing = next(folder for folder in (out, *out.parents) if folder.exists())
  if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
    common.fail(f'--out {out}: {existing} is not writable')


def model_name_or_path() -> str | None:
  if FLAGS.model and FLAGS.checkpoint:
    common.fail('give -n/--model (a packaged model) or --checkpoint (a path), not both')
  if FLAGS.model and FLAGS.model not in inference.packaged_models():
    common.fail(f'--model {FLAGS.model}: no such packaged model (diffvox models lists them: '
                f'{", ".join(inference.packaged_models())})')
  if FLAGS.checkpoint and not pathlib.Path(FLAGS.checkpoint).expanduser().exists():
    common.fail(f'--checkpoint {FLAGS.checkpoint}: no such file or folder')
  return FLAGS.model or FLAGS.checkpoint


def select_device() -> None:
  """Makes `--device` JAX's default device; under --verbose says what JAX found."""
  if FLAGS.device:
    try:
      jax.config.update('jax_default_device', jax.devices(FLAGS.device)[0])
    except RuntimeError:
      common.fail(f'--device {FLAGS.device}: JAX finds no {FLAGS.device} here (it has: {jax.default_backend()})')
  if FLAGS.verbose:
    devices = jax.devices(FLAGS.device) if FLAGS.device else jax.devices()
    print(f'diffvox: jax {jax.__version__}, {devices[0].platform} backend, {len(devices)} device(s): '
          f'{devices[0].device_kind}', file=sys.stderr)


def load_separator() -> api.Separator:
  name_or_path = model_name_or_path()
  select_device()
  try:
    separator = api.Separator.from_pretrained(
        name_or_path, ema=FLAGS.ema, seed=FLAGS.seed, chunk_seconds=FLAGS['chunk-seconds'].value,
        overlap=FLAGS.overlap, batch_size=FLAGS['batch-size'].value, refining=FLAGS.refine is not None,
        **flag_groups.sampler_overrides())
  except (ValueError, OSError) as error:
    common.fail(' '.join(str(error).split()))
  if (FLAGS.refine is not None) != separator.settings.refines:
    common.fail('--refine ESTIMATE and --sigma-start below 1 go together')
  return separator


def _one_line(path: pathlib.Path, error: Exception) -> str:
  message = ' '.join(str(error).split())
  return message if message.startswith(str(path)) else f'{path}: {message}'


def report_levels(path: pathlib.Path, written: separate.Written) -> None:
  for stem, count in written.clamped.items():
    if count:
      warn(f'{written.paths[stem]}: {count} samples beyond full scale were clamped (--clip-mode rescale avoids it)')
  for stem, gain in written.gains.items():
    if gain < 1.0:
      warn(f'{written.paths[stem]}: scaled by {gain:.3f} to fit full scale (--clip-mode clamp keeps the level)')


def main(argv: list[str]) -> None:
  inputs = argv[1:]
  if not inputs:
    common.fail('give at least one INPUT (an audio file or a folder of audio files)')
  if FLAGS.refine is not None and len(inputs) != 1:
    common.fail('--refine refines the estimate of a single INPUT')
  out = pathlib.Path(FLAGS.out).expanduser()
  check_output_folder(out)
  stems = STEM_CHOICES[FLAGS.stem]
  try:
    separate.template_paths(out, FLAGS.filename, 'track', stems, FLAGS.format)
  except ValueError as error:
    common.fail(f'--filename: {error}')
  jobs, errors = expand_inputs(inputs, out)
  for line in errors:
    print(f'diffvox: {line}', file=sys.stderr)
  failures = len(errors)
  if not jobs:
    common.fail(f'{failures} of {failures} inputs failed', code=1)
  separator = load_separator()

  used: dict[pathlib.Path, pathlib.Path] = {}
  separated: list[tuple[pathlib.Path, str, dict[str, pathlib.Path]]] = []
  files = tqdm(jobs, desc='files', unit='file', disable=None if len(jobs) > 1 else True, leave=False)
  for path, track in files:
    destinations = separate.template_paths(out, FLAGS.filename, track, stems, FLAGS.format)
    if clash := next((used[p] for p in destinations.values() if p in used), None):
      tqdm.write(f'diffvox: {path}: its outputs are already taken by {clash}; separate it on its own',
                 file=sys.stderr)
      failures += 1
      continue
    used.update(dict.fromkeys(destinations.values(), path))
    existed = [p for p in destinations.values() if p.exists()]
    if FLAGS['skip-existing'].value and len(existed) == len(destinations):
      tqdm.write(f'{path}: skipped, its outputs exist')
      separated.append((path, track, destinations))
      continue
    try:
      written = separator.separate_file(path, out, track=track, stems=stems, file_format=FLAGS.format,
                                        filename=FLAGS.filename, bits=FLAGS.bits, clip=FLAGS['clip-mode'].value,
                                        mp3_kbps=int(FLAGS['mp3-bitrate'].value), initial=FLAGS.refine)
    except (ValueError, OSError) as error:
      tqdm.write(f'diffvox: {_one_line(path, error)}', file=sys.stderr)
      failures += 1
      continue
    separated.append((path, track, written.paths))
    replaced = ' (replaced existing files)' if existed else ''
    tqdm.write(f'{path} -> {", ".join(map(str, written.paths.values()))}{replaced}')
    report_levels(path, written)
    if FLAGS['chunk-seconds'].value is not None and separator.chunk_seconds > written.seconds:
      warn(f'{path}: --chunk-seconds {separator.chunk_seconds:.2f} is longer than the file ({written.seconds:.2f} '
           's); the chunk is padded')
  files.close()
  if FLAGS.html and separated:
    page = pages.separation_page(out, separated, separator.checkpoint.name, separator.settings)
    print(f'listen: open {page.resolve()} in a browser')
  if failures:
    common.fail(f'{failures} of {len(jobs) + len(errors)} inputs failed', code=1)
