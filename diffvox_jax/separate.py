"""Separation of whole tracks: chunking, batched sampling, overlap-add and streaming to files.

A track of any length, rate and channel count is converted to the model's rate and channels, cut into fixed
chunks (`config.sampler.chunk` samples overlapping by `config.sampler.overlap`), sent through the compiled sampler
`batch_size` chunks at a time (the last batch is zero-padded to the same static shape, so nothing recompiles) and
recombined by windowed overlap-add (`diffvox_jax.chunking`). Files are streamed: chunks are read block by block,
finished vocal samples are converted back to the input's rate and channel count as soon as the overlap-add
releases them, and written straight into the output files, so peak memory does not grow with the track length.

Outputs per input: `vocals` and `instrumental = mixture - vocals`, where the mixture is the input itself at its
own rate and channels (so vocals + instrumental reproduces the input up to output quantisation, unless a stem
beyond full scale was rescaled). Samples beyond full scale are rescaled (the stem's file divided by its peak) or
clamped (`clip`). The files are written to temporary names beside the destinations and renamed only when the whole
track succeeded (`audio.AudioWriter`).

Randomness: chunk i of a track uses the key `fold_in(rng, i)`, so a track's result does not depend on the
batch size.
"""

import contextlib
import dataclasses
import itertools
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import soundfile as sf
from tqdm import tqdm

from diffvox_jax import audio, inference, sampler
from diffvox_jax import config as config_lib
from diffvox_jax.chunking import ChunkPlan, OverlapAdd, chunk_plan, cut_chunks

# (mixture (batch, chunk, channels), keys (batch,), initial (batch, chunk, channels) | None) -> vocals, same shape.
SampleBatch = Callable[[np.ndarray, jax.Array, np.ndarray | None], np.ndarray | jax.Array]


class SeparationError(ValueError):
  """A track that could not be separated; the message is one line naming the file."""


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
    run = sampler.compiled_sampler(inference.network_for_config(config), settings)
    params = jax.device_put(params)

    def sample_batch(mixture, keys, initial=None):
      return run(params, jnp.asarray(mixture), keys, None if initial is None else jnp.asarray(initial))

    chunk = config.sampler.chunk if chunk is None else chunk
    config_lib.check_audio_length(config, 'chunk', chunk)
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

  def separate_array(self, mixture: np.ndarray, sample_rate: int, rng: jax.Array,
                     initial: np.ndarray | None = None) -> np.ndarray:
    """Vocals of an in-memory track `(time, channels)` at `sample_rate`; returns the same shape and rate, float32.

    The track is converted to the model's rate and channels and the vocals back; any channel count the audio
    module can convert is accepted. `initial` (an estimate to refine) has the mixture's shape and rate.
    """
    mixture = np.asarray(mixture, np.float32)
    model_mixture = self._to_model(mixture, sample_rate)
    plan = self.plan(len(model_mixture))
    initial_chunks = None
    if initial is not None:
      if np.shape(initial)[0] != len(mixture):
        raise ValueError(f'the estimate has {np.shape(initial)[0]} samples, the mixture {len(mixture)}')
      initial_chunks = cut_chunks(self._to_model(np.asarray(initial, np.float32), sample_rate), plan)
    vocals = np.concatenate(list(self.vocal_blocks(cut_chunks(model_mixture, plan), plan, rng, initial_chunks)))
    if sample_rate != self.sample_rate:
      vocals = audio.resample(vocals, self.sample_rate, sample_rate)
      vocals = np.pad(vocals[:len(mixture)], ((0, max(0, len(mixture) - len(vocals))), (0, 0)))
    return audio.convert_channels(vocals, mixture.shape[1])

  def _to_model(self, track: np.ndarray, sample_rate: int) -> np.ndarray:
    """`(time, channels)` at `sample_rate` -> the model's rate and channels."""
    if track.ndim != 2 or not track.size:
      raise ValueError(f'expected audio of shape (time, channels), got {track.shape}')
    if sample_rate != self.sample_rate:
      track = audio.resample(track, sample_rate, self.sample_rate)
    return audio.convert_channels(track, self.channels)

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
  return Separator.for_model(config, params, settings).separate_array(mixture, config.data.sample_rate, rng)


STEMS = ('vocals', 'instrumental')
FILENAME_TEMPLATE = '{track}/{stem}.{ext}'


def stem_paths(folder: str | os.PathLike, file_format: str = 'wav',
               stems: Iterable[str] = STEMS) -> dict[str, pathlib.Path]:
  """`{stem: folder/<stem>.<format>}`: where `separate_file` writes one track's stems by default."""
  return template_paths(folder, '{stem}.{ext}', '', stems, file_format)


def template_paths(out: str | os.PathLike, template: str, track: str, stems: Iterable[str],
                   file_format: str) -> dict[str, pathlib.Path]:
  """`{stem: out / template.format(track=, stem=, ext=)}`; a ValueError names a template that cannot work."""
  stems = tuple(stems)
  try:
    paths = {stem: pathlib.Path(out) / template.format(track=track, stem=stem, ext=file_format) for stem in stems}
  except (KeyError, IndexError, ValueError) as error:
    raise ValueError(f'filename template {template!r}: use only {{track}}, {{stem}} and {{ext}} ({error})') from None
  if len(set(paths.values())) < len(stems):
    raise ValueError(f'filename template {template!r} gives every stem the same file; put {{stem}} in it')
  return paths


@dataclasses.dataclass(frozen=True)
class Written:
  """What `separate_file` wrote: `{stem: path}`, per stem the samples clamped and the rescaling gain, and the
  track's length in seconds."""

  paths: dict[str, pathlib.Path]
  clamped: dict[str, int]
  gains: dict[str, float]
  seconds: float


def separate_file(separator: Separator, path: str | os.PathLike, destinations: dict[str, pathlib.Path], *,
                  rng: jax.Array, bits: str = '16', clip: str = 'rescale', mp3_kbps: int = audio.MP3_KBPS,
                  initial: str | os.PathLike | None = None, progress: bool = True) -> Written:
  """Separates one audio file into the files of `destinations` (`{'vocals' | 'instrumental': path}`).

  Streams the file (memory bounded by a few chunks and batches, whatever its length). The outputs have the
  input's sample rate and channel count, in the format of their suffix (.wav, .flac, .mp3), and appear together
  only when the whole track succeeded; folders created for them are removed again on failure.

  Args:
    separator: the model (or any `Separator`).
    path: an audio file in any format `diffvox_jax.audio` reads.
    destinations: the stems to write and where (`stem_paths`, `template_paths`).
    rng: a PRNG key.
    bits: '16', '24' or '32f' (wav only).
    clip: samples beyond full scale: 'rescale' (the file divided by its peak) or 'clamp' (`audio.AudioWriter`).
    mp3_kbps: the bitrate of .mp3 outputs.
    initial: a vocal estimate of the same track to refine (needs a sampler with sigma_start < 1).
    progress: show a tqdm bar (chunks).

  Raises:
    audio.AudioError, SeparationError: a bad input; the message names the file.
  """
  path = pathlib.Path(path)
  if not destinations or set(destinations) - set(STEMS):
    raise ValueError(f'destinations must name some of {STEMS}, got {sorted(destinations)}')
  rate, channels = audio.file_format(path)
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
  original = None
  if 'instrumental' in destinations:
    original = audio.SampleQueue(audio.iter_chunks(path, rate, channels, chunk_plan(frames, audio.READ_BLOCK, 0.0)))
  to_input = audio.StreamConverter(separator.sample_rate, separator.channels, rate, channels, frames)
  created = _make_folders(destinations.values())
  bar = tqdm(total=plan.num_chunks, desc=path.name, unit='chunk', disable=None if progress else True,
             leave=False)
  try:
    with contextlib.ExitStack() as stack:
      writers = {stem: stack.enter_context(audio.AudioWriter(target, rate, channels, bits=bits, clip=clip,
                                                             mp3_kbps=mp3_kbps))
                 for stem, target in destinations.items()}
      done = 0
      for block in separator.vocal_blocks(mixture_chunks, plan, rng, initial_chunks, bar):
        done += len(block)
        vocals = to_input.convert(block, last=done == plan.length)
        if not len(vocals):  # the resampler may hold a whole block back.
          continue
        if 'vocals' in writers:
          writers['vocals'].write(vocals)
        if original is not None:
          writers['instrumental'].write(original.take(len(vocals)) - vocals)
      for writer in writers.values():
        writer.finish()
      for writer in writers.values():
        writer.commit()
      created = []
  except (FloatingPointError, sf.LibsndfileError) as error:
    raise SeparationError(f'{path}: {error}') from error
  finally:
    bar.close()
    for folder in reversed(created):  # a failed input leaves nothing behind.
      if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
  return Written({stem: w.path for stem, w in writers.items()}, {stem: w.clamped for stem, w in writers.items()},
                 {stem: w.gain for stem, w in writers.items()}, frames / rate)


def _make_folders(paths: Iterable[pathlib.Path]) -> list[pathlib.Path]:
  """Creates the parent folders of `paths`; returns those it created, outermost first."""
  created = []
  for path in paths:
    missing = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    for folder in reversed(missing):
      folder.mkdir(exist_ok=True)
      created.append(folder)
  return created
