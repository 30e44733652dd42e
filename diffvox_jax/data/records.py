"""The stored form of a prepared dataset: every track cut into blocks of one stream, int16, in a known order.

Why blocks and not whole tracks per record: an array_record read costs milliseconds per MB (zstd decompression
plus the proto copy; docs/benchmarks.md has the figures), so a 4-minute MUSDB track with its five streams (about
200 MB as one record) would cost a large part of a second for every 3 s training crop. With one record per second of
one stream (~176 kB at 44.1 kHz stereo) a crop reads only the streams and seconds it uses.

Records (a tfds `FeaturesDict`, `RECORD_FEATURES`), written in this order (`disable_shuffling`):
track by track, stream by stream, block by block. Stream `s`, block `b` of a track therefore sits at record
`first_record + s * num_blocks + b` of its split; every read checks the record's track, stream and block names.
tfds keeps that order when the example keys are increasing integers; spreading the tracks' keys evenly over the
128-bit key range (`example_key`) also spreads them over tfds's on-disk sort buckets, so a split larger than
memory is never sorted in one piece.

Streams of a track (`stream_names`): `vocals`, `accompaniment`, then the individual non-vocal stems when the source
has at least two (used by stem remixing), then `mixture` when the source ships its own mixture (evaluation only).
Samples are `round(x / scale)` int16 with one `scale` per track (the peak over all its streams / 32767), so stems
of a track keep their relative levels and `x = int16 * scale`.

The split-level track table (`TrackEntry` per track) and the format facts live in the dataset's `metadata.json`
(tfds `MetadataDict`): `{'format', 'block', 'sample_rate', 'channels', 'build', 'splits': {split: [entries]}}`.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from diffvox_jax.data.layouts import TrackAudio

FORMAT_VERSION = 1
BLOCK_SECONDS = 1.0
INT16_MAX = 32767
KEY_BITS = 128  # tfds example keys are 128-bit integers
VOCALS, ACCOMPANIMENT, MIXTURE = 'vocals', 'accompaniment', 'mixture'


def record_features(channels: int) -> tfds.features.FeaturesDict:
  """The tfds features of one record; `audio` is `(time, channels)` int16 stored as raw bytes (no TensorFlow)."""
  return tfds.features.FeaturesDict({
      'audio': tfds.features.Tensor(shape=(None, channels), dtype=np.int16, encoding='bytes'),
      'track': tfds.features.Text(),
      'stream': tfds.features.Text(),
      'block': tfds.features.Scalar(dtype=np.int32),
  })


def block_length(sample_rate: int) -> int:
  """Samples per record block at a rate."""
  return int(round(BLOCK_SECONDS * sample_rate))


@dataclasses.dataclass(frozen=True)
class TrackEntry:
  """One track of a split's table.

  Attributes:
    name: the track name.
    length: samples per stream.
    streams: stream names, in record order.
    first_record: index of the track's first record within its split.
    num_blocks: records per stream.
    scale: int16 -> float factor.
    metadata: per-track facts from the source (artist, singer, seed, ...).
  """
  name: str
  length: int
  streams: tuple[str, ...]
  first_record: int
  num_blocks: int
  scale: float
  metadata: dict

  @property
  def stems(self) -> tuple[str, ...]:
    """The individual non-vocal stems stored for this track (empty when it has only vocals + accompaniment)."""
    return tuple(s for s in self.streams if s not in (VOCALS, ACCOMPANIMENT, MIXTURE))

  @property
  def num_records(self) -> int:
    return len(self.streams) * self.num_blocks

  def record_index(self, stream: str, block: int) -> int:
    return self.first_record + self.streams.index(stream) * self.num_blocks + block

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, value: dict) -> 'TrackEntry':
    return cls(**{**value, 'streams': tuple(value['streams'])})


def track_streams(track: TrackAudio) -> dict[str, np.ndarray]:
  """The streams to store for a track, in record order, all `(time, channels)` float32 of one length."""
  reserved = sorted(set(track.stems) & {VOCALS, ACCOMPANIMENT, MIXTURE})
  if reserved:
    raise ValueError(f'individual stems cannot be named {", ".join(reserved)}')
  streams = {VOCALS: track.vocals, ACCOMPANIMENT: track.accompaniment, **track.stems}
  if track.mixture is not None:
    streams[MIXTURE] = track.mixture
  lengths = {len(a) for a in streams.values()}
  if len(lengths) != 1:
    raise ValueError(f'streams of one track differ in length: {sorted(lengths)}')
  return streams


def quantize(streams: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
  """int16 streams and the track's scale (its peak / 32767; silence keeps scale 1/32767)."""
  peak = max(float(np.max(np.abs(a))) if a.size else 0.0 for a in streams.values())
  scale = (peak if peak > 0 else 1.0) / INT16_MAX
  return {name: np.round(a / scale).astype(np.int16) for name, a in streams.items()}, scale


def example_key(track_index: int, num_tracks: int, record: int) -> int:
  """The tfds key of a track's `record`-th record: increasing in storage order, tracks spread over 2**128."""
  return (track_index << KEY_BITS) // num_tracks + record


def encode_track(track_index: int, num_tracks: int, name: str, streams: dict[str, np.ndarray], block: int,
                 first_record: int, metadata: dict) -> tuple[TrackEntry, Iterator[tuple[int, dict]]]:
  """The table entry of a track and its records `(key, features)` in storage order.

  Args:
    track_index: position of the track in its split.
    num_tracks: tracks in the split.
    name: track name.
    streams: float32 streams from `track_streams`.
    block: samples per block.
    first_record: records already written to the split.
    metadata: per-track facts (JSON-serialisable).
  """
  quantized, scale = quantize(streams)
  length = len(next(iter(streams.values())))
  entry = TrackEntry(name, length, tuple(streams), first_record, -(-length // block), scale, metadata)

  def records() -> Iterator[tuple[int, dict]]:
    for stream_index, (stream, samples) in enumerate(quantized.items()):
      for b in range(entry.num_blocks):
        key = example_key(track_index, num_tracks, stream_index * entry.num_blocks + b)
        yield key, {'audio': samples[b * block:(b + 1) * block], 'track': name, 'stream': stream, 'block': b}

  return entry, records()
