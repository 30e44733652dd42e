"""Audio files in and out: read any common format, resample, convert channels, write wav/flac/mp3 atomically.

Arrays are float32 `(time, channels)`. Reading uses soundfile (wav, flac, ogg, mp3, aiff, ...) and falls back to
ffmpeg for anything else it can decode (m4a, mp4, aac, ...); `read_stems` reads the five streams of a MUSDB18
`.stem.mp4` (for plain reads, a stem file gives its first stream, the mixture). Resampling is soxr 'HQ'.

Channel conversion (`convert_channels`): mono -> stereo duplicates the channel; any count -> mono is the mean of
the channels; more than two channels -> stereo is refused with a clear error, because a sound downmix needs the
channel layout (downmix such a file first, e.g. `ffmpeg -i in.wav -ac 2 out.wav`, which knows the layout).

Bad input raises `AudioError` (a ValueError) whose one-line message starts with the file path: missing file,
undecodable or truncated file, zero-length audio, NaN/Inf samples.

Chunking and overlap-add live in `diffvox_jax.chunking` and are re-exported here; `iter_chunks` streams a file
straight into chunks (block reads + streaming resampling), so long files are processed with bounded memory;
`StreamConverter` converts a stream of blocks back to a file's rate and channels (`file_format`), and
`SampleQueue` re-cuts a block stream into arbitrary amounts.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator

import numpy as np
import soundfile as sf
import soxr

from diffvox_jax import files
from diffvox_jax.chunking import ChunkCutter, ChunkPlan, OverlapAdd, chunk_plan, chunk_window, cut_chunks, overlap_add

__all__ = [
    'AudioError', 'AudioWriter', 'ChunkCutter', 'ChunkPlan', 'OverlapAdd', 'STEM_NAMES', 'audio_length', 'chunk_plan',
    'chunk_window', 'convert_channels', 'cut_chunks', 'db_to_gain', 'iter_chunks', 'load_audio',
    'overlap_add', 'read_audio', 'read_stems', 'resample', 'rms_db', 'write_audio',
]

STEM_NAMES = ('mixture', 'drums', 'bass', 'other', 'vocals')  # stream order of a MUSDB18 .stem.mp4
RESAMPLE_QUALITY = 'HQ'
READ_BLOCK = 65536  # frames per soundfile block in `iter_chunks`
WRITE_SUBTYPES = {'16': 'PCM_16', '24': 'PCM_24', '32f': 'FLOAT'}
WRITE_FORMATS = {'.wav': 'WAV', '.flac': 'FLAC', '.mp3': 'MP3'}
CLIP_MODES = ('rescale', 'clamp')
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # what MPEG-1/2/2.5 layer III holds
MP3_BITRATES = (64, 96, 128, 160, 192, 224, 256, 320)  # kbit/s
MP3_KBPS = 320
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
                clip: str = 'rescale', mp3_kbps: int = MP3_KBPS) -> None:
  """Writes `(time, channels)` (or `(time,)` mono) float audio, nominally in [-1, 1], atomically (`AudioWriter`)."""
  audio = np.asarray(audio, np.float32)
  audio = audio[:, None] if audio.ndim == 1 else audio
  if audio.ndim != 2 or not audio.size:
    raise ValueError(f'{path}: expected non-empty audio of shape (time, channels), got {audio.shape}')
  with AudioWriter(path, sample_rate, audio.shape[1], bits=bits, clip=clip, mp3_kbps=mp3_kbps) as writer:
    writer.write(audio)
    writer.commit()


class AudioWriter:
  """Streams `(time, channels)` float blocks into a .wav, .flac or .mp3 file that appears only on `commit()`.

  The samples go to a hidden temp file beside `path` (`files.hidden_temp`); `commit()` renames it over `path`, and
  leaving the `with` block without a commit removes it, so a failure never leaves a partial file nor touches an
  existing one. Temp files of `path` left by a killed process are removed on opening.

  Samples beyond full scale, in formats that cannot hold them (integer PCM, mp3; float wav keeps them as they
  are): `clip='clamp'` clips them (`clamped` counts them); `clip='rescale'` stages the samples as float, then
  `finish()` divides the whole file by its peak when the peak exceeds 1 (`gain` is the factor applied), at the
  cost of one more pass over the file. `bits` is '16' or '24' (integer PCM) or '32f'
  (float, wav only); mp3 is constant-bitrate `mp3_kbps` (8 to 48 kHz audio only).
  """

  def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int, *, bits: str = '16',
               clip: str = 'rescale', mp3_kbps: int = MP3_KBPS):
    self.path = pathlib.Path(path)
    self._format = WRITE_FORMATS.get(self.path.suffix.lower())
    if self._format is None:
      raise ValueError(f'{self.path}: cannot write {self.path.suffix!r} files (use {", ".join(WRITE_FORMATS)})')
    if bits not in WRITE_SUBTYPES:
      raise ValueError(f'{self.path}: bits must be one of {sorted(WRITE_SUBTYPES)}, got {bits!r}')
    if clip not in CLIP_MODES:
      raise ValueError(f'{self.path}: clip must be one of {CLIP_MODES}, got {clip!r}')
    if self._format == 'FLAC' and bits == '32f':
      raise ValueError(f'{self.path}: FLAC stores integers only; use bits 16 or 24, or a .wav file for float')
    if self._format == 'MP3' and sample_rate not in MP3_RATES:
      raise ValueError(f'{self.path}: mp3 holds audio at {", ".join(map(str, MP3_RATES))} Hz only, not '
                       f'{sample_rate} Hz (write wav or flac)')
    if mp3_kbps not in MP3_BITRATES:
      raise ValueError(f'{self.path}: the mp3 bitrate must be one of {MP3_BITRATES} kbit/s, got {mp3_kbps}')
    files.remove_stale_temps(self.path)
    self.sample_rate, self.channels = sample_rate, channels
    self.clip = None if bits == '32f' and self._format == 'WAV' else clip  # float wav holds any value.
    self._bits, self._mp3_kbps = bits, mp3_kbps
    self.clamped, self.gain, self._peak = 0, 1.0, 0.0
    self._temp = files.hidden_temp(self.path)
    self._staged = files.hidden_temp(self.path, '.float') if self.clip == 'rescale' else None
    self._file = (sf.SoundFile(self._staged, 'w', sample_rate, channels, 'FLOAT', format='WAV')
                  if self._staged else self._open_final())
    self._finished = False

  def _open_final(self) -> sf.SoundFile:
    if self._format == 'MP3':  # libsndfile maps the level linearly onto lame's 320..32 kbit/s.
      return sf.SoundFile(self._temp, 'w', self.sample_rate, self.channels, 'MPEG_LAYER_III', format='MP3',
                          compression_level=(320 - self._mp3_kbps) / 288, bitrate_mode='CONSTANT')
    return sf.SoundFile(self._temp, 'w', self.sample_rate, self.channels, WRITE_SUBTYPES[self._bits],
                        format=self._format)

  def write(self, block: np.ndarray) -> None:
    """Appends `(time, channels)` float samples."""
    block = np.asarray(block, np.float32)
    if block.ndim != 2 or block.shape[1] != self.channels:
      raise ValueError(f'{self.path}: expected blocks of shape (time, {self.channels}), got {block.shape}')
    if not np.isfinite(block).all():
      raise ValueError(f'{self.path}: refusing to write NaN or Inf samples')
    if self.clip == 'clamp':
      self.clamped += int(np.count_nonzero(np.abs(block) > 1.0))
      block = np.clip(block, -1.0, 1.0)
    elif self._staged:
      self._peak = max(self._peak, float(np.abs(block).max(initial=0.0)))
    self._file.write(block)

  def finish(self) -> None:
    """Completes the temp file (rescaling a staged one by its peak); `commit` calls it when not done yet."""
    if self._finished:
      return
    self._file.close()
    if self._staged:
      self.gain = 1.0 / self._peak if self._peak > 1.0 else 1.0
      self._file = self._open_final()
      with sf.SoundFile(self._staged) as staged:
        for block in staged.blocks(READ_BLOCK, dtype='float32', always_2d=True):
          self._file.write(np.clip(block * np.float32(self.gain), -1.0, 1.0))  # clip: float rounding only.
      self._file.close()
      self._staged.unlink()
    self._finished = True

  def commit(self) -> None:
    """Renames the finished temp file over `path`."""
    self.finish()
    os.replace(self._temp, self.path)
    self._temp = None

  def __enter__(self) -> 'AudioWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self._file.close()
    for temp in (self._temp, self._staged):
      if temp is not None:
        temp.unlink(missing_ok=True)


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


def file_format(path: str | os.PathLike) -> tuple[int, int]:
  """(sample_rate, channels) of an audio file: from the header where soundfile reads it, else by decoding."""
  try:
    info = sf.info(str(path))
    return info.samplerate, info.channels
  except sf.LibsndfileError:
    decoded, rate = read_audio(path)  # formats only ffmpeg decodes (m4a, mp4, ...); errors name the file.
    return rate, decoded.shape[1]


class StreamConverter:
  """Converts a stream of `(time, channels_in)` blocks at `rate_in` to `rate` and `channels`, `frames` samples in
  all (`convert(block, last)` per block; the last call flushes the resampler and pads a rounding shortfall)."""

  def __init__(self, rate_in: int, channels_in: int, rate: int, channels: int, frames: int):
    self._stream = None
    if rate != rate_in:
      self._stream = soxr.ResampleStream(rate_in, rate, channels_in, dtype='float32', quality=RESAMPLE_QUALITY)
    self._channels = channels
    self._remaining = frames

  def convert(self, block: np.ndarray, last: bool) -> np.ndarray:
    if self._stream is not None:
      block = self._stream.resample_chunk(block, last=last)
    block = convert_channels(block, self._channels)[:self._remaining]
    if last and len(block) < self._remaining:  # resampling can round one sample short of the input's length.
      block = np.concatenate([block, np.zeros((self._remaining - len(block), self._channels), np.float32)])
    self._remaining -= len(block)
    return block


class SampleQueue:
  """Hands out the samples of a chunk iterator in arbitrary amounts, in order."""

  def __init__(self, chunks: Iterable[np.ndarray]):
    self._chunks = iter(chunks)
    self._buffer: list[np.ndarray] = []
    self._buffered = 0

  def take(self, count: int) -> np.ndarray:
    while self._buffered < count:
      chunk = next(self._chunks)
      self._buffer.append(chunk)
      self._buffered += len(chunk)
    joined = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
    self._buffer, self._buffered = [joined[count:]], len(joined) - count
    return joined[:count]


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
