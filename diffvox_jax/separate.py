"""Separation of whole tracks: chunking, batched sampling, overlap-add and streaming to files.

A track of any length, rate and channel count is converted to the model's rate and channels, cut into fixed
chunks (`config.sampler.chunk` samples overlapping by `config.sampler.overlap`), sent through the compiled sampler
`batch_size` chunks at a time (the last batch is zero-padded to the same static shape, so nothing recompiles) and
recombined by windowed overlap-add (`diffvox_jax.chunking`). Files are streamed: chunks are read block by block,
finished vocal samples are converted back to the input's rate and channel count as soon as the overlap-add
releases them, and written straight into the output files, so peak memory does not grow with the track length.

Outputs per input: `vocals` and `instrumental = mixture - vocals`, where the mixture is the input itself at its
own rate and channels (so vocals + instrumental reproduces the input up to output quantisation). Integer outputs
(16/24 bit) clamp samples beyond full scale; `bits='32f'` keeps them. Both files are written to temporary names
beside the destination and renamed only when the whole track succeeded.

Randomness: chunk i of a track uses the key `fold_in(rng, i)`, so a track's result does not depend on the
batch size.
"""

import dataclasses
import functools
import itertools
import os
import pathlib
import uuid
from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from diffvox_jax import audio, sampler
from diffvox_jax import config as config_lib
from diffvox_jax.chunking import ChunkPlan, OverlapAdd, chunk_plan, cut_chunks
from diffvox_jax.models import build_model

# The packaged pretrained model that `--checkpoint` falls back to, relative to this package (`tools/train_pretrained.py`
# makes it; its MODEL_CARD.md says how and what it reaches).
DEFAULT_CHECKPOINT = 'pretrained/mask_baseline_16k'

# (mixture (batch, chunk, channels), keys (batch,), initial (batch, chunk, channels) | None) -> vocals, same shape.
SampleBatch = Callable[[np.ndarray, jax.Array, np.ndarray | None], np.ndarray | jax.Array]


class SeparationError(ValueError):
  """A track that could not be separated; the message is one line naming the file."""


def packaged_models() -> list[str]:
  """Names of the models shipped in the package (`diffvox separate --checkpoint NAME` loads them)."""
  folder = pathlib.Path(__file__).resolve().parent / 'pretrained'
  return sorted(p.name for p in folder.iterdir() if (p / 'config.json').is_file()) if folder.is_dir() else []


def resolve_checkpoint(name_or_path: str | None) -> pathlib.Path:
  """The default model for None; an existing path as is; else a packaged model of that name; else the path (whose
  loading then fails with a message naming it)."""
  if not name_or_path:
    return default_checkpoint()
  path = pathlib.Path(name_or_path).expanduser()
  if not path.exists() and name_or_path in packaged_models():
    return pathlib.Path(__file__).resolve().parent / 'pretrained' / name_or_path
  return path


def default_checkpoint() -> pathlib.Path:
  """The packaged pretrained model's folder; a `SeparationError` when this installation lacks it."""
  folder = pathlib.Path(__file__).resolve().parent / DEFAULT_CHECKPOINT
  if not (folder / 'config.json').is_file():
    raise SeparationError(f'{folder}: the packaged pretrained model is missing from this installation: pass '
                          '--checkpoint (a training workdir or an exported model folder)')
  return folder


@functools.lru_cache(maxsize=8)
def _network_for_config_json(config_json: str) -> sampler.Network:
  return sampler.model_network(build_model(config_lib.from_json(config_json)))


def network_for_config(config: ml_collections.ConfigDict) -> sampler.Network:
  """The model's `sampler.Network`, one per distinct config, so `compiled_sampler`'s cache is reused."""
  return _network_for_config_json(config_lib.to_json(config))


def chunk_length(config: ml_collections.ConfigDict, seconds: float) -> int:
  """`seconds` at the model's rate, rounded to the nearest positive multiple of the total down-sampling."""
  if seconds <= 0:
    raise ValueError(f'chunk length must be positive, got {seconds} s')
  hop = config_lib.total_downsampling(config)
  return max(1, round(seconds * config.data.sample_rate / hop)) * hop


@jax.jit
def _chunk_keys(rng: jax.Array, indices: jax.Array) -> jax.Array:
  """`fold_in(rng, i)` for each chunk index: typed keys `(len(indices),)`."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, indices)


@dataclasses.dataclass(frozen=True)
class Separator:
  """Everything separation needs from a model: a batched sampling function and the chunking geometry.

  Attributes:
    sample_batch: maps `batch_size` mixture chunks (and their keys, and estimates when refining) to vocals.
    sample_rate: the model's rate in Hz.
    channels: the model's channel count.
    chunk: samples per chunk (what `sample_batch` accepts).
    overlap: fraction of a chunk shared by neighbours.
    batch_size: chunks per `sample_batch` call.
  """

  sample_batch: SampleBatch
  sample_rate: int
  channels: int
  chunk: int
  overlap: float
  batch_size: int

  def __post_init__(self):
    if self.chunk < 1 or self.batch_size < 1:
      raise ValueError(f'chunk ({self.chunk}) and batch size ({self.batch_size}) must be at least 1')
    if not 0.0 <= self.overlap < 1.0:
      raise ValueError(f'overlap must be a fraction in [0, 1), got {self.overlap}')

  @classmethod
  def for_model(cls, config: ml_collections.ConfigDict, params, settings: sampler.SamplerSettings | None = None,
                *, chunk: int | None = None, overlap: float | None = None,
                batch_size: int | None = None) -> 'Separator':
    """A separator that runs the compiled sampler of `config`'s model with `params`.

    Args:
      config: the model's config; `config.sampler` gives the defaults.
      params: the model's `'params'` collection.
      settings: sampler settings (default: `SamplerSettings.from_config(config)`).
      chunk, overlap, batch_size: override `config.sampler.chunk`, `.overlap`, `.batch_size`.
    """
    settings = settings or sampler.SamplerSettings.from_config(config)
    run = sampler.compiled_sampler(network_for_config(config), settings)
    params = jax.device_put(params)

    def sample_batch(mixture, keys, initial=None):
      return run(params, jnp.asarray(mixture), keys, None if initial is None else jnp.asarray(initial))

    chunk = config.sampler.chunk if chunk is None else chunk
    hop = config_lib.total_downsampling(config)
    if chunk <= 0 or chunk % hop:
      raise ValueError(f'chunk={chunk} is not a positive multiple of the total down-sampling {hop}')
    return cls(sample_batch=sample_batch, sample_rate=int(config.data.sample_rate),
               channels=int(config.data.channels), chunk=int(chunk),
               overlap=float(config.sampler.overlap if overlap is None else overlap),
               batch_size=int(config.sampler.batch_size if batch_size is None else batch_size))

  def plan(self, length: int) -> ChunkPlan:
    """The chunk plan of a track of `length` samples at the model's rate."""
    return chunk_plan(length, self.chunk, self.overlap)

  def vocal_blocks(self, chunks: Iterable[np.ndarray], plan: ChunkPlan, rng: jax.Array,
                   initial_chunks: Iterable[np.ndarray] | None = None,
                   progress: tqdm | None = None) -> Iterator[np.ndarray]:
    """Streams a track's vocals: yields consecutive finished blocks `(time, channels)` float32 at the model rate.

    Args:
      chunks: the plan's mixture chunks `(chunk, channels)`, in order (an iterator is consumed lazily).
      plan: the chunk plan of the track.
      rng: a PRNG key; chunk i uses `fold_in(rng, i)`.
      initial_chunks: chunks of an estimate to refine (same plan), when the sampler refines.
      progress: a tqdm bar advanced by one per chunk.
    """
    accumulator = OverlapAdd(plan, self.channels)
    initial_batches = _batches(initial_chunks, self.batch_size) if initial_chunks is not None else None
    pending = None  # the previous batch's device result: the next batch is dispatched before waiting for it.
    for first_index, mixture in zip(itertools.count(0, self.batch_size), _batches(chunks, self.batch_size)):
      initial = next(initial_batches) if initial_batches is not None else None
      keys = _chunk_keys(rng, jnp.arange(first_index, first_index + self.batch_size))
      result = self.sample_batch(self._padded(mixture), keys, None if initial is None else self._padded(initial))
      if pending is not None:
        yield from self._finish(accumulator, *pending, progress)
      pending = (result, len(mixture))
    if pending is not None:
      yield from self._finish(accumulator, *pending, progress)

  def separate_array(self, mixture: np.ndarray, rng: jax.Array, initial: np.ndarray | None = None) -> np.ndarray:
    """Vocals of an in-memory track `(time, channels)` at the model's rate; returns the same shape, float32.

    Any channel count the audio module can convert is accepted; the result has the input's channel count.
    """
    mixture = np.asarray(mixture, np.float32)
    model_mixture = audio.convert_channels(mixture, self.channels)
    plan = self.plan(len(mixture))
    initial_chunks = None
    if initial is not None:
      if len(initial) != len(mixture):
        raise ValueError(f'the estimate has {len(initial)} samples, the mixture {len(mixture)}')
      initial_chunks = cut_chunks(audio.convert_channels(initial, self.channels), plan)
    blocks = list(self.vocal_blocks(cut_chunks(model_mixture, plan), plan, rng, initial_chunks))
    return audio.convert_channels(np.concatenate(blocks), mixture.shape[1])

  def _padded(self, chunks: list[np.ndarray]) -> np.ndarray:
    """Stacks up to `batch_size` chunks into `(batch_size, chunk, channels)`, zero rows after the last."""
    batch = np.zeros((self.batch_size, self.chunk, self.channels), np.float32)
    batch[:len(chunks)] = np.stack(chunks)
    return batch

  @staticmethod
  def _finish(accumulator: OverlapAdd, result, count: int, progress: tqdm | None) -> Iterator[np.ndarray]:
    vocals = np.asarray(result, np.float32)[:count]
    if not np.isfinite(vocals).all():
      raise FloatingPointError('the model produced NaN or Inf samples')
    for chunk in vocals:
      yield accumulator.add(chunk)
      if progress is not None:
        progress.update(1)


def _batches(items: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
  iterator = iter(items)
  while batch := list(itertools.islice(iterator, size)):
    yield batch


def separate_array(config: ml_collections.ConfigDict, params, mixture: np.ndarray, *, rng: jax.Array,
                   settings: sampler.SamplerSettings | None = None) -> np.ndarray:
  """Vocals of an in-memory track (used by evaluation).

  Args:
    config: the model's config (chunking and default sampler settings from `config.sampler`).
    params: the model's `'params'` collection.
    mixture: `(time, channels)` float32 at `config.data.sample_rate`.
    rng: a PRNG key.
    settings: sampler settings (default: from the config).

  Returns:
    vocals `(time, channels)` float32, the same shape as `mixture`.
  """
  return Separator.for_model(config, params, settings).separate_array(mixture, rng)


@dataclasses.dataclass(frozen=True)
class Outputs:
  """The files written for one input."""

  vocals: pathlib.Path
  instrumental: pathlib.Path


def input_format(path: pathlib.Path) -> tuple[int, int]:
  """(sample_rate, channels) of an audio file: from the header where soundfile reads it, else by decoding."""
  try:
    info = sf.info(str(path))
    return info.samplerate, info.channels
  except sf.LibsndfileError:
    decoded, rate = audio.read_audio(path)  # formats only ffmpeg decodes (m4a, mp4, ...); errors name the file.
    return rate, decoded.shape[1]


class _ToInputFormat:
  """Converts a stream of model-rate blocks back to the input's rate and channels, `frames` samples in all."""

  def __init__(self, model_rate: int, model_channels: int, rate: int, channels: int, frames: int):
    self._stream = None
    if rate != model_rate:
      self._stream = soxr.ResampleStream(model_rate, rate, model_channels, dtype='float32',
                                         quality=audio.RESAMPLE_QUALITY)
    self._channels = channels
    self._remaining = frames

  def convert(self, block: np.ndarray, last: bool) -> np.ndarray:
    if self._stream is not None:
      block = self._stream.resample_chunk(block, last=last)
    block = audio.convert_channels(block, self._channels)[:self._remaining]
    if last and len(block) < self._remaining:  # resampling can round one sample short of the input's length.
      block = np.concatenate([block, np.zeros((self._remaining - len(block), self._channels), np.float32)])
    self._remaining -= len(block)
    return block


class _SampleQueue:
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


class _AtomicWriters:
  """Output files written under temporary names and renamed together by `commit` (removed if never committed)."""

  def __init__(self, paths: list[pathlib.Path], sample_rate: int, channels: int, bits: str):
    suffix = paths[0].suffix.lower()
    if suffix not in audio.WRITE_FORMATS or bits not in audio.WRITE_SUBTYPES:
      raise ValueError(f'cannot write {suffix!r} files with {bits!r} bits')
    if audio.WRITE_FORMATS[suffix] == 'FLAC' and bits == '32f':
      raise ValueError('FLAC stores integers only; use bits 16 or 24, or wav for 32f')
    self._clamp = bits != '32f'
    self._paths = paths
    self._temps = [p.with_name(f'.{p.name}.{uuid.uuid4().hex[:12]}.tmp') for p in paths]
    self._files = []
    for temp in self._temps:
      self._files.append(sf.SoundFile(temp, 'w', sample_rate, channels, subtype=audio.WRITE_SUBTYPES[bits],
                                      format=audio.WRITE_FORMATS[suffix]))

  def write(self, *blocks: np.ndarray) -> None:
    for file, block in zip(self._files, blocks, strict=True):
      file.write(np.clip(block, -1.0, 1.0) if self._clamp else block)

  def commit(self) -> None:
    for file in self._files:
      file.close()
    for temp, path in zip(self._temps, self._paths, strict=True):
      os.replace(temp, path)
    self._temps = []

  def __enter__(self) -> '_AtomicWriters':
    return self

  def __exit__(self, *exc_info) -> None:
    for file in self._files:
      file.close()
    for temp in self._temps:
      temp.unlink(missing_ok=True)


def separate_file(separator: Separator, path: str | os.PathLike, out_dir: str | os.PathLike, *, rng: jax.Array,
                  file_format: str = 'wav', bits: str = '16', initial: str | os.PathLike | None = None,
                  progress: bool = True) -> Outputs:
  """Separates one audio file into `out_dir/vocals.<format>` and `out_dir/instrumental.<format>`.

  Streams the file (memory bounded by a few chunks and batches, whatever its length). The outputs have the
  input's sample rate and channel count.

  Args:
    separator: the model (or any `Separator`).
    path: an audio file in any format `diffvox_jax.audio` reads.
    out_dir: created if needed.
    rng: a PRNG key.
    file_format: 'wav' or 'flac'.
    bits: '16', '24' or '32f' (wav only).
    initial: a vocal estimate of the same track to refine (needs a sampler with sigma_start < 1).
    progress: show a tqdm bar (chunks).

  Raises:
    audio.AudioError, SeparationError: a bad input; the message names the file.
  """
  path = pathlib.Path(path)
  out_dir = pathlib.Path(out_dir)
  rate, channels = input_format(path)
  frames = audio.audio_length(path, rate)
  plan = separator.plan(audio.audio_length(path, separator.sample_rate))
  mixture_chunks = audio.iter_chunks(path, separator.sample_rate, separator.channels, plan)
  initial_chunks = None
  if initial is not None:
    initial = pathlib.Path(initial)
    if (initial_length := audio.audio_length(initial, separator.sample_rate)) != plan.length:
      raise SeparationError(f'{initial}: {initial_length} samples at {separator.sample_rate} Hz, but the mixture '
                            f'{path} has {plan.length}')
    initial_chunks = audio.iter_chunks(initial, separator.sample_rate, separator.channels, plan)
  # The input itself, at its own rate and channels, for the instrumental (read in blocks alongside).
  original = _SampleQueue(audio.iter_chunks(path, rate, channels, chunk_plan(frames, audio.READ_BLOCK, 0.0)))
  to_input = _ToInputFormat(separator.sample_rate, separator.channels, rate, channels, frames)
  created = not out_dir.exists()
  out_dir.mkdir(parents=True, exist_ok=True)
  outputs = Outputs(out_dir / f'vocals.{file_format}', out_dir / f'instrumental.{file_format}')
  bar = tqdm(total=plan.num_chunks, desc=path.name, unit='chunk', disable=None if progress else True,
             leave=False)
  committed = False
  try:
    with _AtomicWriters([outputs.vocals, outputs.instrumental], rate, channels, bits) as writers:
      done = 0
      for block in separator.vocal_blocks(mixture_chunks, plan, rng, initial_chunks, bar):
        done += len(block)
        vocals = to_input.convert(block, last=done == plan.length)
        if len(vocals):  # the resampler may hold a whole block back.
          writers.write(vocals, original.take(len(vocals)) - vocals)
      writers.commit()
      committed = True
  except (FloatingPointError, sf.LibsndfileError) as error:
    raise SeparationError(f'{path}: {error}') from error
  finally:
    bar.close()
    if created and not committed and not any(out_dir.iterdir()):
      out_dir.rmdir()  # a failed input leaves nothing behind.
  return outputs

