"""Audio files in and out: read any common format, resample, convert channels, write wav/flac atomically.

Arrays are float32 `(time, channels)`. Reading uses soundfile (wav, flac, ogg, mp3, aiff, ...) and falls back to
ffmpeg for anything else it can decode (m4a, mp4, aac, ...); `read_stems` reads the five streams of a MUSDB18
`.stem.mp4` (for plain reads, a stem file gives its first stream, the mixture). Resampling is soxr 'HQ'.

Channel conversion (`convert_channels`): mono -> stereo duplicates the channel; any count -> mono is the mean of
the channels; more than two channels -> stereo is refused with a clear error, because a sound downmix needs the
channel layout (downmix such a file first, e.g. `ffmpeg -i in.wav -ac 2 out.wav`, which knows the layout).

Bad input raises `AudioError` (a ValueError) whose one-line message starts with the file path: missing file,
undecodable or truncated file, zero-length audio, NaN/Inf samples.

Chunking and overlap-add live in `diffvox_jax.chunking` and are re-exported here; `iter_chunks` streams a file
straight into chunks (block reads + streaming resampling), so long files are processed with bounded memory.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import soundfile as sf
import soxr

from diffvox_jax.chunking import ChunkCutter, ChunkPlan, OverlapAdd, chunk_plan, chunk_window, cut_chunks, overlap_add

__all__ = [
    'AudioError', 'ChunkCutter', 'ChunkPlan', 'OverlapAdd', 'STEM_NAMES', 'audio_length', 'chunk_plan',
    'chunk_window', 'convert_channels', 'cut_chunks', 'db_to_gain', 'iter_chunks', 'load_audio', 'open_writer',
    'overlap_add', 'read_audio', 'read_stems', 'resample', 'rms_db', 'write_audio',
]

STEM_NAMES = ('mixture', 'drums', 'bass', 'other', 'vocals')  # stream order of a MUSDB18 .stem.mp4
RESAMPLE_QUALITY = 'HQ'
READ_BLOCK = 65536  # frames per soundfile block in `iter_chunks`
WRITE_SUBTYPES = {'16': 'PCM_16', '24': 'PCM_24', '32f': 'FLOAT'}
WRITE_FORMATS = {'.wav': 'WAV', '.flac': 'FLAC'}
CLIP_MODES = ('rescale', 'clamp')
# libsndfile logs `data : <header size> (should be <bytes present>)` for a WAV whose data chunk is short; streaming
# writers that cannot seek back leave a placeholder size, which is not truncation.
_WAV_DATA_SIZE = re.compile(r'^data\s*:\s*(\d+) \(should be (\d+)\)', re.MULTILINE)
_SIZE_PLACEHOLDERS = (0, 0x7FFFFFFF, 0xFFFFFFFF)
_NO_SAMPLES = 'no audio samples (empty or truncated file)'


class AudioError(ValueError):
  """A file that cannot be used as audio; the message is one line starting with the file path."""


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
  """Reads a whole file at its own rate and channel count.

  Returns:
    (audio, sample_rate): audio `(time, channels)` float32.
  """
  path = _existing(path)
  try:
    file = _open_soundfile(path)
  except _SoundfileCannotOpen as soundfile_error:
    try:
      streams = _ffprobe_streams(path)
      if not streams:
        raise _ToolFailed('ffprobe: no audio stream') from None
      audio, sample_rate = _ffmpeg_decode(path, 0, streams[0])
    except _ToolFailed as ffmpeg_error:
      raise AudioError(f'{path}: unreadable (soundfile: {soundfile_error}; {ffmpeg_error})') from ffmpeg_error
    return _checked(path, audio), sample_rate
  with file:
    blocks = list(_soundfile_blocks(path, file, block=file.frames + 1))  # one block unless the header undercounts
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks), file.samplerate


def load_audio(path: str | os.PathLike, sample_rate: int, channels: int) -> np.ndarray:
  """Reads a file and converts it to `sample_rate` and `channels`; returns `(time, channels)` float32."""
  audio, rate = read_audio(path)
  try:
    return convert_channels(resample(audio, rate, sample_rate), channels)
  except ValueError as error:
    raise AudioError(f'{path}: {error}') from error


def read_stems(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], int]:
  """Reads the five streams of a MUSDB18 `.stem.mp4` (needs ffmpeg).

  Returns:
    (stems, sample_rate): `stems[name]` is `(time, channels)` float32 for each name in `STEM_NAMES`. AAC streams
    can differ in length by a few samples; all are cut to the shortest.
  """
  path = _existing(path)
  try:
    streams = _ffprobe_streams(path)
    if len(streams) < len(STEM_NAMES):
      raise AudioError(f'{path}: {len(streams)} audio streams, a stem file has {len(STEM_NAMES)} '
                       f'({", ".join(STEM_NAMES)})')
    decoded = [_ffmpeg_decode(path, index, streams[index]) for index in range(len(STEM_NAMES))]
  except _ToolFailed as error:
    raise AudioError(f'{path}: unreadable ({error})') from error
  rates = {rate for _, rate in decoded}
  if len(rates) > 1:
    raise AudioError(f'{path}: stem streams have different sample rates {sorted(rates)}')
  length = min(len(audio) for audio, _ in decoded)
  stems = {name: _checked(path, audio[:length]) for name, (audio, _) in zip(STEM_NAMES, decoded, strict=True)}
  return stems, rates.pop()


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Resamples `(time, channels)` with soxr; the output has round(time * rate_out / rate_in) samples."""
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 2:
    raise ValueError(f'expected audio of shape (time, channels), got {audio.shape}')
  if rate_in == rate_out:
    return audio
  return soxr.resample(audio, rate_in, rate_out, quality=RESAMPLE_QUALITY)


def convert_channels(audio: np.ndarray, channels: int) -> np.ndarray:
  """Converts `(time, c)` to `(time, channels)`: 1 -> 2 duplicates, c -> 1 averages, c > 2 -> 2 is an error."""
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 2 or channels < 1:
    raise ValueError(f'cannot convert audio of shape {audio.shape} to {channels} channels')
  have = audio.shape[1]
  if have == channels:
    return audio
  if channels == 1:
    return audio.mean(axis=1, keepdims=True)
  if have == 1:
    return np.repeat(audio, channels, axis=1)
  raise ValueError(f'cannot convert {have} channels to {channels} without the channel layout '
                   f'(downmix first, e.g. ffmpeg -i IN -ac {channels} OUT.wav)')


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, *, bits: str = '16',
                clip: str = 'rescale') -> None:
  """Writes `(time, channels)` (or `(time,)` mono) audio to .wav or .flac atomically.

  Args:
    path: destination; the suffix picks the format. A temp file in the same folder replaces it at the end, so a
      failure never leaves a partial file nor touches an existing one.
    audio: float samples, nominally in [-1, 1].
    sample_rate: samples per second.
    bits: '16' or '24' (integer PCM), or '32f' (float, WAV only).
    clip: what to do with a peak above 1: 'rescale' divides the whole signal by its peak, 'clamp' clips samples.
  """
  if clip not in CLIP_MODES:
    raise ValueError(f'{path}: clip must be one of {CLIP_MODES}, got {clip!r}')
  audio = np.asarray(audio, np.float32)
  audio = audio[:, None] if audio.ndim == 1 else audio
  if audio.ndim != 2 or not audio.size:
    raise ValueError(f'{path}: expected non-empty audio of shape (time, channels), got {audio.shape}')
  peak = float(np.abs(audio).max())
  if clip == 'rescale' and peak > 1.0:
    audio = audio / peak
  with open_writer(path, sample_rate, audio.shape[1], bits=bits) as write:
    write(audio)


@contextlib.contextmanager
def open_writer(path: str | os.PathLike, sample_rate: int, channels: int, *,
                bits: str = '16') -> Iterator[Callable[[np.ndarray], None]]:
  """Streams blocks into a .wav/.flac file atomically, for outputs too long to hold in memory.

  Yields a function `write(block)` taking `(time, channels)` float blocks; samples outside [-1, 1] are clamped
  (rescaling needs the whole signal's peak: use `write_audio`). The file appears at `path` (replacing any old one)
  only when the `with` block ends without an error; otherwise the temp file is removed.
  """
  path = pathlib.Path(path)
  file_format = WRITE_FORMATS.get(path.suffix.lower())
  if file_format is None:
    raise ValueError(f'{path}: cannot write {path.suffix!r} files (use {" or ".join(WRITE_FORMATS)})')
  if bits not in WRITE_SUBTYPES:
    raise ValueError(f'{path}: bits must be one of {sorted(WRITE_SUBTYPES)}, got {bits!r}')
  if file_format == 'FLAC' and bits == '32f':
    raise ValueError(f'{path}: FLAC stores integers only; use bits 16 or 24, or a .wav file for float')

  def write(block: np.ndarray) -> None:
    block = np.asarray(block, np.float32)
    if block.ndim != 2 or block.shape[1] != channels:
      raise ValueError(f'{path}: expected blocks of shape (time, {channels}), got {block.shape}')
    if not np.isfinite(block).all():
      raise ValueError(f'{path}: refusing to write NaN or Inf samples')
    file.write(np.clip(block, -1.0, 1.0))

  temp_path = path.with_name(f'.{path.name}.{uuid.uuid4().hex[:12]}.tmp')
  try:
    with sf.SoundFile(temp_path, 'w', sample_rate, channels, WRITE_SUBTYPES[bits], format=file_format) as file:
      yield write
    os.replace(temp_path, path)
  except BaseException:
    temp_path.unlink(missing_ok=True)
    raise


def audio_length(path: str | os.PathLike, sample_rate: int) -> int:
  """Samples that `load_audio(path, sample_rate, ...)` and `iter_chunks` give; use it to build a `chunk_plan`.

  Cheap for soundfile formats (header only); files decoded through ffmpeg are decoded in full to count.
  """
  path = _existing(path)
  try:
    with _open_soundfile(path) as file:
      frames, rate = file.frames, file.samplerate
  except _SoundfileCannotOpen:
    audio, rate = read_audio(path)
    frames = len(audio)
  if not frames:
    raise AudioError(f'{path}: {_NO_SAMPLES}')
  return frames if rate == sample_rate else (2 * frames * sample_rate + rate) // (2 * rate)


def iter_chunks(path: str | os.PathLike, sample_rate: int, channels: int, plan: ChunkPlan,
                block: int = READ_BLOCK) -> Iterator[np.ndarray]:
  """Yields the chunks `(plan.chunk, channels)` float32 of a file, as `cut_chunks(load_audio(...), plan)` would.

  soundfile formats are read `block` frames at a time through a streaming soxr resampler, so memory stays bounded
  by a few chunks and blocks; other formats (ffmpeg) are decoded whole first. `plan.length` must equal
  `audio_length(path, sample_rate)`.
  """
  path = _existing(path)
  cutter = ChunkCutter(plan, channels)
  try:
    for audio_block in _iter_blocks(path, sample_rate, block):
      yield from cutter.push(convert_channels(audio_block, channels))
    yield from cutter.finish()
  except AudioError:
    raise
  except ValueError as error:
    raise AudioError(f'{path}: {error}') from error


def db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
  """Amplitude gain of a level in dB: 10 ** (db / 20)."""
  return 10.0 ** (np.asarray(db) / 20.0)


def rms_db(audio: np.ndarray, axis: int | tuple[int, ...] | None = None) -> float | np.ndarray:
  """RMS level in dBFS (a full-scale sine is -3 dB); -inf for digital silence. Reduces over `axis` (all: None)."""
  mean_square = np.mean(np.square(np.asarray(audio, np.float64)), axis=axis)
  with np.errstate(divide='ignore'):
    return 10.0 * np.log10(mean_square)


class _SoundfileCannotOpen(Exception):
  """soundfile does not recognise the file; the caller tries ffmpeg."""


def _existing(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.exists():
    raise AudioError(f'{path}: no such file')
  if not path.is_file():
    raise AudioError(f'{path}: not a file')
  return path


def _open_soundfile(path: pathlib.Path) -> sf.SoundFile:
  """Opens with soundfile; a short WAV data chunk is an AudioError, an unknown format `_SoundfileCannotOpen`."""
  try:
    file = sf.SoundFile(path)
  except sf.LibsndfileError as error:
    raise _SoundfileCannotOpen(error.error_string.rstrip('.')) from error
  size = _WAV_DATA_SIZE.search(file.extra_info)
  if size and int(size[1]) not in _SIZE_PLACEHOLDERS and int(size[1]) - int(size[2]) > 1:
    file.close()
    raise AudioError(f'{path}: truncated file (header declares {size[1]} data bytes, {size[2]} present)')
  return file


def _checked(path: pathlib.Path, audio: np.ndarray) -> np.ndarray:
  """`audio` if it has samples and all are finite, else an AudioError."""
  if not len(audio):
    raise AudioError(f'{path}: {_NO_SAMPLES}')
  return _finite(path, audio)


def _finite(path: pathlib.Path, audio: np.ndarray) -> np.ndarray:
  if not np.isfinite(audio).all():
    raise AudioError(f'{path}: contains NaN or Inf samples')
  return audio


def _soundfile_blocks(path: pathlib.Path, file: sf.SoundFile, block: int) -> Iterator[np.ndarray]:
  """Checked blocks `(time, channels)` float32 of an open file; the last one is shorter than `block`."""
  frames = 0
  while True:
    try:
      audio = file.read(block, dtype='float32', always_2d=True)
    except sf.LibsndfileError as error:
      raise AudioError(f'{path}: undecodable, truncated or corrupt ({error.error_string.rstrip(".")})') from error
    frames += len(audio)
    last = len(audio) < block
    if last and frames < file.frames:
      raise AudioError(f'{path}: truncated file ({frames} of {file.frames} frames decoded)')
    if not frames:
      raise AudioError(f'{path}: {_NO_SAMPLES}')
    yield _finite(path, audio)
    if last:
      return


def _iter_blocks(path: pathlib.Path, sample_rate: int, block: int) -> Iterator[np.ndarray]:
  """Checked blocks `(time, channels)` float32 of a file at `sample_rate` (its own channel count)."""
  try:
    file = _open_soundfile(path)
  except _SoundfileCannotOpen:
    audio, rate = read_audio(path)
    yield resample(audio, rate, sample_rate)
    return
  with file:
    if file.samplerate == sample_rate:
      yield from _soundfile_blocks(path, file, block)
      return
    stream = soxr.ResampleStream(file.samplerate, sample_rate, file.channels, dtype='float32',
                                 quality=RESAMPLE_QUALITY)
    for audio in _soundfile_blocks(path, file, block):
      yield stream.resample_chunk(audio, last=len(audio) < block)


class _ToolFailed(Exception):
  """ffprobe/ffmpeg is missing or failed; the message is `tool: reason`."""


def _run_tool(tool: str, *args: str) -> bytes:
  """Runs ffprobe/ffmpeg quietly; returns its stdout."""
  executable = shutil.which(tool)
  if executable is None:
    raise _ToolFailed(f'{tool}: not on PATH (install ffmpeg to read this format)')
  result = subprocess.run([executable, '-v', 'error', *args], capture_output=True, check=False)
  if result.returncode:
    lines = result.stderr.decode(errors='replace').strip().splitlines()
    raise _ToolFailed(f'{tool}: {lines[-1] if lines else f"exit status {result.returncode}"}')
  return result.stdout


def _ffprobe_streams(path: pathlib.Path) -> list[dict]:
  """The audio streams of a file as ffprobe reports them, each with `sample_rate` and `channels`."""
  report = _run_tool('ffprobe', '-select_streams', 'a', '-show_entries', 'stream=sample_rate,channels',
                     '-of', 'json', str(path))
  return json.loads(report).get('streams', [])


def _ffmpeg_decode(path: pathlib.Path, index: int, stream: dict) -> tuple[np.ndarray, int]:
  """Decodes audio stream `index` (described by `stream`) to `(time, channels)` float32 and its sample rate."""
  channels = int(stream['channels'])
  raw = _run_tool('ffmpeg', '-nostdin', '-i', str(path), '-map', f'0:a:{index}', '-ac', str(channels),
                  '-f', 'f32le', '-acodec', 'pcm_f32le', '-')
  return np.frombuffer(raw, np.float32).reshape(-1, channels), int(stream['sample_rate'])
