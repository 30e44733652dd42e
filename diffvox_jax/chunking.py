"""Fixed-length chunking with overlap, and windowed overlap-add that undoes it exactly.

A track of `length` samples is cut into `num_chunks` chunks of `chunk` samples starting every `hop` samples
(`hop = chunk - overlap`); the last chunk (or the only one, for a track shorter than a chunk) is zero-padded.

Window (the paper leaves it open, docs/paper.md): each chunk is weighted by a Hann-shaped taper
`sin^2(pi (k + 1/2) / (2 overlap))` rising over its first `overlap` samples and the mirrored taper falling over
its last `overlap` samples, except at the track edges (the first chunk's start and the last chunk's end are not
faded). The rising and falling tapers sum to one, and the weighted sum is divided by the summed window envelope
anyway, so chunks passed through unchanged reconstruct the input exactly (float64 accumulation, float32 output).

Streaming: `ChunkCutter` cuts blocks of a long signal as they arrive and `OverlapAdd` returns finished samples as
soon as no later chunk can touch them, so a file of any length is processed with memory bounded by a few chunks.
`cut_chunks` and `overlap_add` are the same machines run over a whole array.
"""

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
  """Where the chunks of a track start. All counts are in samples.

  Attributes:
    length: samples in the track (before padding).
    chunk: samples per chunk.
    overlap: samples shared by neighbouring chunks (`0 <= overlap < chunk`).
    num_chunks: chunks needed to cover the track.
  """

  length: int
  chunk: int
  overlap: int
  num_chunks: int

  @property
  def hop(self) -> int:
    return self.chunk - self.overlap

  @property
  def starts(self) -> np.ndarray:
    """First sample of each chunk, shape (num_chunks,)."""
    return np.arange(self.num_chunks) * self.hop

  @property
  def padded_length(self) -> int:
    """Samples covered by all chunks: the track plus the zero padding of the last chunk."""
    return (self.num_chunks - 1) * self.hop + self.chunk


def chunk_plan(length: int, chunk: int, overlap: float) -> ChunkPlan:
  """Plans chunks of `chunk` samples overlapping by the fraction `overlap` of a chunk (0.2 in the paper).

  Args:
    length: samples in the track, at least 1.
    chunk: samples per chunk, at least 1.
    overlap: fraction of a chunk shared by neighbours, in [0, 1); rounded to whole samples.
  """
  if length < 1:
    raise ValueError(f'cannot chunk a track of {length} samples')
  if chunk < 1:
    raise ValueError(f'chunk must be at least 1 sample, got {chunk}')
  if not 0.0 <= overlap < 1.0:
    raise ValueError(f'overlap must be a fraction in [0, 1), got {overlap}')
  overlap_samples = min(round(overlap * chunk), chunk - 1)
  hop = chunk - overlap_samples
  num_chunks = max(1, -(-(length - overlap_samples) // hop))
  return ChunkPlan(length=length, chunk=chunk, overlap=overlap_samples, num_chunks=num_chunks)


def chunk_window(plan: ChunkPlan, index: int) -> np.ndarray:
  """The overlap-add weight of chunk `index`, shape (chunk,) float64, strictly positive."""
  window = np.ones(plan.chunk)
  if plan.overlap:
    rise = np.sin(np.pi * (np.arange(plan.overlap) + 0.5) / (2 * plan.overlap)) ** 2
    if index > 0:
      window[:plan.overlap] *= rise
    if index < plan.num_chunks - 1:
      window[-plan.overlap:] *= rise[::-1]
  return window


class ChunkCutter:
  """Cuts a signal arriving in blocks into the chunks of a plan, in order.

  Holds at most one chunk plus one block. Feed blocks `(time, channels)` with `push` (yields each chunk
  `(chunk, channels)` float32 as soon as it is complete), then call `finish` for the zero-padded remainder.
  """

  def __init__(self, plan: ChunkPlan, channels: int):
    self.plan = plan
    self._buffer = np.zeros((0, channels), np.float32)
    self._buffer_start = 0  # track position of self._buffer[0]
    self._received = 0
    self._next_index = 0

  def push(self, block: np.ndarray) -> Iterator[np.ndarray]:
    """Adds `block` (time, channels) and yields the chunks it completes."""
    self._received += len(block)
    if self._received > self.plan.length:
      raise ValueError(f'received {self._received} samples but the plan covers {self.plan.length}')
    self._buffer = np.concatenate([self._buffer, np.asarray(block, np.float32)])
    yield from self._emit(available=self._received)

  def finish(self) -> Iterator[np.ndarray]:
    """Yields the remaining chunks, zero-padded past the end of the track."""
    if self._received != self.plan.length:
      raise ValueError(f'received {self._received} samples but the plan expects {self.plan.length}')
    padding = np.zeros((self.plan.padded_length - self._received, self._buffer.shape[1]), np.float32)
    self._buffer = np.concatenate([self._buffer, padding])
    yield from self._emit(available=self.plan.padded_length)

  def _emit(self, available: int) -> Iterator[np.ndarray]:
    while self._next_index < self.plan.num_chunks:
      start = self._next_index * self.plan.hop
      if start + self.plan.chunk > available:
        return
      offset = start - self._buffer_start
      yield self._buffer[offset:offset + self.plan.chunk].copy()
      self._next_index += 1
      drop = self._next_index * self.plan.hop - self._buffer_start
      self._buffer = self._buffer[min(drop, len(self._buffer)):]
      self._buffer_start += drop


class OverlapAdd:
  """Streaming windowed overlap-add: feed the chunks of a plan in order, get finished samples back.

  After chunk `i` every sample before chunk `i + 1`'s start is final and is returned; after the last chunk the rest
  of the track is. Memory: one chunk of float64 accumulator plus its envelope.
  """

  def __init__(self, plan: ChunkPlan, channels: int):
    self.plan = plan
    self._sum = np.zeros((0, channels))
    self._envelope = np.zeros(0)
    self._done = 0  # samples already returned (track position of self._sum[0])
    self._next_index = 0

  @property
  def finished(self) -> bool:
    return self._next_index == self.plan.num_chunks

  def add(self, chunk: np.ndarray) -> np.ndarray:
    """Adds the next chunk `(chunk, channels)`; returns the samples it finished, `(time, channels)` float32."""
    if self.finished:
      raise ValueError(f'all {self.plan.num_chunks} chunks were already added')
    if chunk.shape != (self.plan.chunk, self._sum.shape[1]):
      raise ValueError(f'chunk shape {chunk.shape} != {(self.plan.chunk, self._sum.shape[1])}')
    index = self._next_index
    offset = index * self.plan.hop - self._done
    grow = offset + self.plan.chunk - len(self._envelope)
    self._sum = np.concatenate([self._sum, np.zeros((grow, self._sum.shape[1]))])
    self._envelope = np.concatenate([self._envelope, np.zeros(grow)])
    window = chunk_window(self.plan, index)
    self._sum[offset:offset + self.plan.chunk] += window[:, None] * chunk
    self._envelope[offset:offset + self.plan.chunk] += window
    self._next_index += 1
    final_end = self.plan.length if self.finished else self._next_index * self.plan.hop
    count = min(final_end, self.plan.length) - self._done
    out = (self._sum[:count] / self._envelope[:count, None]).astype(np.float32)
    self._sum, self._envelope = self._sum[count:], self._envelope[count:]
    self._done += count
    return out


def cut_chunks(audio: np.ndarray, plan: ChunkPlan) -> np.ndarray:
  """Cuts `audio` (length, channels) into `(num_chunks, chunk, channels)` float32, the last one zero-padded."""
  if audio.ndim != 2 or len(audio) != plan.length:
    raise ValueError(f'audio shape {audio.shape} does not match a plan of length {plan.length}')
  cutter = ChunkCutter(plan, audio.shape[1])
  return np.stack([*cutter.push(audio), *cutter.finish()])


def overlap_add(chunks: Iterable[np.ndarray] | np.ndarray, plan: ChunkPlan) -> np.ndarray:
  """Recombines chunks `(num_chunks, chunk, channels)` into the track `(length, channels)` float32."""
  chunks = list(chunks)
  if len(chunks) != plan.num_chunks:
    raise ValueError(f'got {len(chunks)} chunks, the plan has {plan.num_chunks}')
  accumulator = OverlapAdd(plan, chunks[0].shape[-1])
  return np.concatenate([accumulator.add(chunk) for chunk in chunks])
