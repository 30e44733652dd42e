"""Reading prepared datasets: the tracks of one or more splits and any span of any of their streams.

    dataset = PreparedDataset('musdb18hq', 'train+validation', data_dir, sample_rate=44100, channels=2)
    vocals = dataset.read(track=3, stream='vocals', start=44100, length=131072)  # (131072, 2) float32

Reads go through `tfds.data_source` (array_record, random access) and touch only the blocks a span covers; int16
samples are converted to float32 once, straight into the output. A span reaching past either end of a track is
zero-filled there.
"""

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from diffvox_jax.data import builders, records
from diffvox_jax.data.builders import DatasetError

SPLIT_SEPARATOR = '+'


class PreparedDataset:
  """The tracks of a prepared dataset's splits (`'train'`, `'train+validation'`, ...), with random-access reads.

  Attributes:
    name: dataset name (`musdb18hq`, `synthetic`, ...).
    sample_rate: samples per second of every stream.
    channels: channels of every stream.
    block: samples per stored record.
    tracks: the `records.TrackEntry` of every track, the splits' tracks concatenated in split order.
  """

  def __init__(self, name: str, splits: str, data_dir: str | pathlib.Path, sample_rate: int, channels: int):
    self.name, self.sample_rate, self.channels = name, sample_rate, channels
    self._splits = [s.strip() for s in splits.split(SPLIT_SEPARATOR)]
    self._data_dir = str(pathlib.Path(data_dir).expanduser())
    if name not in builders.BUILDERS:
      raise DatasetError(f'unknown dataset {name!r} (known: {", ".join(builders.BUILDERS)})')
    path = builders.dataset_path(name, data_dir, sample_rate, channels)
    if not (path / 'dataset_info.json').is_file():
      found = builders.prepared_configs(name, data_dir)
      raise DatasetError(
          f'{name} is not prepared at {sample_rate} Hz, {channels} channel(s) in {self._data_dir} '
          f'(prepared there: {", ".join(found) or "none"}); run: diffvox prepare --dataset {name} '
          f'--data-dir {self._data_dir} --sample-rate {sample_rate} --channels {channels} ...')
    metadata = builders.stored_metadata(path)
    if metadata.get('format') != records.FORMAT_VERSION:
      raise DatasetError(f'{path}: record format {metadata.get("format")}, this code reads format '
                         f'{records.FORMAT_VERSION}; prepare the dataset again')
    missing = [s for s in self._splits if s not in metadata['splits']]
    if missing:
      raise DatasetError(f'{name} has no split {", ".join(missing)} (it has: {", ".join(metadata["splits"])})')
    self.block = int(metadata['block'])
    self.tracks: list[records.TrackEntry] = []
    self._split_of_track: list[int] = []
    for split_index, split in enumerate(self._splits):
      entries = [records.TrackEntry.from_json(e) for e in metadata['splits'][split]]
      self.tracks += entries
      self._split_of_track += [split_index] * len(entries)
    self._sources = self._open_sources()

  def _open_sources(self) -> list:
    config = f'{self.name}/{builders.config_name(self.sample_rate, self.channels)}'
    return [tfds.data_source(config, split=split, data_dir=self._data_dir) for split in self._splits]

  def __getstate__(self) -> dict:
    """Pickles without the open data sources (for grain worker processes)."""
    return {**self.__dict__, '_sources': None}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._sources = self._open_sources()

  def read(self, track: int, stream: str, start: int, length: int) -> np.ndarray:
    """`length` samples of a stream from `start` (zeros outside the track), `(length, channels)` float32."""
    entry = self.tracks[track]
    lo, hi = max(start, 0), min(start + length, entry.length)
    if lo >= hi:
      return np.zeros((length, self.channels), np.float32)
    out = np.empty((length, self.channels), np.float32)
    out[:lo - start] = 0.0
    out[hi - start:] = 0.0
    first, last = lo // self.block, (hi - 1) // self.block
    source, scale = self._sources[self._split_of_track[track]], np.float32(entry.scale)
    for b in range(first, last + 1):  # one read per record: array_record's batched read starts a thread pool
      record = source[entry.record_index(stream, b)]
      self._check(record, entry, stream, b)
      block_start = b * self.block
      a, z = max(lo, block_start), min(hi, block_start + len(record['audio']))
      np.multiply(record['audio'][a - block_start:z - block_start], scale, out=out[a - start:z - start])
    return out

  def read_track(self, track: int, stream: str) -> np.ndarray:
    """A whole stream of a track, `(length, channels)` float32."""
    return self.read(track, stream, 0, self.tracks[track].length)

  def _check(self, record: dict, entry: records.TrackEntry, stream: str, block: int) -> None:
    found = (record['track'].decode(), record['stream'].decode(), int(record['block']))
    if found != (entry.name, stream, block):
      raise DatasetError(f'{self.name}: record of {found} where the track table expects {(entry.name, stream, block)}'
                         f'; the dataset in {self._data_dir} is inconsistent, prepare it again')
