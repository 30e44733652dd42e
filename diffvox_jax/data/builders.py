"""tfds builders, one per source, that turn a local folder (or synthetic songs) into an array_record dataset.

No TensorFlow is needed: the stems are int16 `tfds.features.Tensor`s stored as raw bytes (see `records.py` for
the record layout) in `array_record` files, read back with `tfds.data_source`. Audio is resampled and converted
to the requested rate and channel count at build time; the builder config is named after them
(`<data_dir>/<dataset>/<rate>hz_<channels>ch/<version>/`), so builds at different rates never collide.

    builder = make_builder('musdb18hq', data_dir, sample_rate=44100, channels=2)
    prepare(builder, manual_dir='~/musdb18hq')
    tfds.data_source('musdb18hq/44100hz_2ch', split='train', data_dir=data_dir)

`prepare` is idempotent: an existing build is reused, provided it was made with the same options (song count,
vocals stem); a different option is an error that says where the existing build is.
"""

import abc
import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterator

import tensorflow_datasets as tfds
import tqdm

from diffvox_jax.data import layouts, records

VERSION = tfds.core.Version('1.0.0')


class DatasetError(ValueError):
  """A dataset that is not prepared, or was prepared with other options; the message says what to run."""


@dataclasses.dataclass
class AudioConfig(tfds.core.BuilderConfig):
  """A build at one sample rate and channel count."""
  sample_rate: int = 44100
  channels: int = 2


def config_name(sample_rate: int, channels: int) -> str:
  return f'{sample_rate}hz_{channels}ch'


def audio_config(sample_rate: int, channels: int) -> AudioConfig:
  if sample_rate <= 0 or channels not in (1, 2):
    raise ValueError(f'need a positive sample rate and 1 or 2 channels, got {sample_rate} Hz, {channels} channels')
  return AudioConfig(name=config_name(sample_rate, channels), version=VERSION, sample_rate=sample_rate,
                     channels=channels, description=f'{sample_rate} Hz, {channels} channel(s), int16 blocks')


class _LocalAudioBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Common build logic: discover tracks, decode each at the config's rate, write blocks and the track table.

  Subclasses define `_sources` (the tracks, usually found in `_manual_root`) and `MANUAL_DOWNLOAD_INSTRUCTIONS`.
  """
  VERSION = VERSION
  BUILDER_CONFIGS = [audio_config(44100, 2)]
  DESCRIPTION = ''
  HOMEPAGE = ''

  def __init__(self, *, build_options: dict | None = None, **kwargs):
    """`build_options` are the source options (e.g. `num_songs`) recorded in the metadata; other args go to tfds."""
    self._build_options = dict(build_options or {})
    super().__init__(**kwargs)

  @property
  def build_options(self) -> dict:
    return dict(self._build_options)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION, homepage=self.HOMEPAGE,
        features=records.record_features(self.builder_config.channels), metadata=tfds.core.MetadataDict(),
        disable_shuffling=True)

  @abc.abstractmethod
  def _sources(self, dl_manager: tfds.download.DownloadManager) -> list[layouts.TrackSource]:
    """The tracks to build, with their splits."""

  def _manual_root(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    try:
      return pathlib.Path(dl_manager.manual_dir)
    except AssertionError as error:  # tfds: manual dir not given, missing or empty
      problem = str(error).splitlines()[0].rstrip('.')
      raise layouts.LayoutError(f'{self.name}: {problem}; expected: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}') from error

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    by_split: dict[str, list[layouts.TrackSource]] = {}
    for source in self._sources(dl_manager):
      by_split.setdefault(source.split, []).append(source)
    config = self.builder_config
    self.info.metadata.update({
        'format': records.FORMAT_VERSION, 'block': records.block_length(config.sample_rate),
        'sample_rate': config.sample_rate, 'channels': config.channels, 'build': self._build_options,
        'splits': {split: [] for split in by_split}})
    return {split: self._generate_examples(split, sources) for split, sources in by_split.items()}

  def _generate_examples(self, split: str, sources: list[layouts.TrackSource]) -> Iterator[tuple[int, dict]]:
    config, table = self.builder_config, self.info.metadata['splits'][split]
    block, written = records.block_length(config.sample_rate), 0
    for index, source in enumerate(tqdm.tqdm(sources, desc=f'{self.name} {split}', unit='track')):
      track = source.load(config.sample_rate, config.channels)
      entry, track_records = records.encode_track(
          index, len(sources), source.name, records.track_streams(track), block, written,
          {**source.metadata, **track.metadata})
      yield from track_records
      table.append(entry.to_json())
      written += entry.num_records


class _ManualLayoutBuilder(_LocalAudioBuilder, skip_registration=True):
  """A dataset read from the manual folder by one `layouts` function (`LAYOUT`: folder -> track sources)."""
  LAYOUT: Callable[[pathlib.Path], list[layouts.TrackSource]]

  def _sources(self, dl_manager):
    return type(self).LAYOUT(self._manual_root(dl_manager))


class Musdb18hq(_ManualLayoutBuilder):
  """MUSDB18-HQ (uncompressed wav stems)."""
  DESCRIPTION = 'MUSDB18-HQ: 150 songs with vocals, drums, bass and other stems (44.1 kHz wav).'
  HOMEPAGE = 'https://sigsep.github.io/datasets/musdb.html'
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Download and unzip musdb18hq.zip (zenodo 3338373): {train,test}/<song>/*.wav.'
  LAYOUT = staticmethod(layouts.musdb18hq_tracks)


class Musdb18(_ManualLayoutBuilder):
  """MUSDB18 (`.stem.mp4`, decoded with ffmpeg)."""
  DESCRIPTION = 'MUSDB18: 150 songs as 5-stream .stem.mp4 files (mixture, drums, bass, other, vocals).'
  HOMEPAGE = 'https://sigsep.github.io/datasets/musdb.html'
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Download and unzip musdb18.zip (zenodo 1117372): {train,test}/<song>.stem.mp4.'
  LAYOUT = staticmethod(layouts.musdb18_tracks)


class Moisesdb(_ManualLayoutBuilder):
  """MoisesDB: vocals against everything else (kept as drums, bass and other for stem remixing)."""
  DESCRIPTION = 'MoisesDB: 240 multitrack songs; vocals vs. the rest (grouped as drums, bass, other).'
  HOMEPAGE = 'https://music.ai/research/'
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Download MoisesDB and extract it: <provider>/<track id>/data.json + stem folders.'
  LAYOUT = staticmethod(layouts.moisesdb_tracks)


class Mir1k(_ManualLayoutBuilder):
  """MIR-1K (original `Wavfile/` layout or `<split>/<clip>/` folders)."""
  DESCRIPTION = 'MIR-1K: 1000 karaoke clips, voice and accompaniment recorded separately (16 kHz).'
  HOMEPAGE = 'http://mirlab.org/dataset/public/'
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Extract MIR-1K (Wavfile/*.wav), or use <split>/<clip>/{vocals,accompaniment}.flac.'
  LAYOUT = staticmethod(layouts.mir1k_tracks)


class StemsFolder(_LocalAudioBuilder):
  """Any folder of `<song>/<stem>.{wav,flac,mp3}`; build option `vocals_stem` names the vocal file."""
  DESCRIPTION = 'A local folder of songs, one file per stem.'
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Point --manual-dir at <song>/<stem>.{wav,flac,mp3} (or <split>/<song>/...).'

  def _sources(self, dl_manager):
    return layouts.stems_folder_tracks(self._manual_root(dl_manager), self._build_options.get('vocals_stem', 'vocals'))


class Synthetic(_LocalAudioBuilder):
  """Synthetic songs (`synthetic.render_song`); build options `num_songs` and `max_seconds`."""
  DESCRIPTION = 'Synthetic songs: Bach chorales sung by Festival over FluidSynth accompaniment.'

  def _sources(self, dl_manager):
    return layouts.synthetic_tracks(self._build_options['num_songs'], self._build_options.get('max_seconds'))


BUILDERS: dict[str, type[_LocalAudioBuilder]] = {
    'musdb18hq': Musdb18hq, 'musdb18': Musdb18, 'moisesdb': Moisesdb, 'mir1k': Mir1k, 'stems_folder': StemsFolder,
    'synthetic': Synthetic,
}
NEEDS_MANUAL_DIR = frozenset(BUILDERS) - {'synthetic'}


def canonical_options(name: str, *, num_songs: int | None = None, max_seconds: float | None = None,
                  vocals_stem: str | None = None) -> dict:
  """The canonical build options of a dataset (recorded in its metadata); an option it does not take is an error.

  Args:
    name: dataset name.
    num_songs: synthetic only, required: songs to render.
    max_seconds: synthetic only: caps each song's length.
    vocals_stem: stems_folder only: the vocal file's stem name (default `vocals`).
  """
  given = {'num_songs': num_songs, 'max_seconds': max_seconds, 'vocals_stem': vocals_stem}
  takes = {'synthetic': ('num_songs', 'max_seconds'), 'stems_folder': ('vocals_stem',)}.get(name, ())
  foreign = [option for option, value in given.items() if value is not None and option not in takes]
  if foreign:
    raise DatasetError(f'{name} takes no {", ".join(foreign)} option')
  if name == 'synthetic':
    if num_songs is None:
      raise DatasetError('synthetic needs the number of songs (--num-songs)')
    return {'num_songs': int(num_songs), 'max_seconds': None if max_seconds is None else float(max_seconds)}
  if name == 'stems_folder':
    return {'vocals_stem': vocals_stem or 'vocals'}
  return {}


def make_builder(name: str, data_dir: str | pathlib.Path, sample_rate: int, channels: int,
                 options: dict | None = None) -> _LocalAudioBuilder:
  """The builder of dataset `name` at a rate and channel count, writing array_record files under `data_dir`.

  Args:
    name: dataset name (a key of `BUILDERS`).
    data_dir: the tfds data folder.
    sample_rate: rate of the stored audio.
    channels: 1 or 2.
    options: from `canonical_options` (default: the dataset's defaults).
  """
  if name not in BUILDERS:
    raise DatasetError(f'unknown dataset {name!r} (known: {", ".join(BUILDERS)})')
  builder_class = BUILDERS[name]
  config = audio_config(sample_rate, channels)
  if config.name in {c.name for c in builder_class.BUILDER_CONFIGS}:
    config = config.name  # tfds refuses a new config object named like a listed one
  return builder_class(config=config, data_dir=str(pathlib.Path(data_dir).expanduser()), file_format='array_record',
                       build_options=canonical_options(name) if options is None else options)


def prepare(builder: _LocalAudioBuilder, manual_dir: str | pathlib.Path | None = None) -> bool:
  """Builds the dataset unless it is already there; returns True when it was built now.

  Raises:
    DatasetError: an existing build was made with other build options.
    layouts.LayoutError: the manual folder does not have the dataset's layout.
  """
  if builder.is_prepared():
    built_with = stored_metadata(builder.data_path)['build']
    if built_with != builder.build_options:
      raise DatasetError(f'{builder.data_path} was built with {json.dumps(built_with)}, not '
                         f'{json.dumps(builder.build_options)}; remove it or use another --data-dir')
    return False
  if manual_dir is not None:
    manual_dir = pathlib.Path(manual_dir).expanduser()
    if not manual_dir.is_dir() or not any(manual_dir.iterdir()):
      raise layouts.LayoutError(f'{manual_dir}: no such folder, or an empty one; expected: '
                                f'{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}')
  download_config = tfds.download.DownloadConfig(manual_dir=None if manual_dir is None else str(manual_dir))
  builder.download_and_prepare(download_config=download_config)
  return True


def stored_metadata(data_path: str | pathlib.Path) -> dict:
  """The format facts and track tables of a built dataset (its `metadata.json`)."""
  path = pathlib.Path(data_path) / 'metadata.json'
  try:
    return json.loads(path.read_text())
  except FileNotFoundError as error:
    raise DatasetError(f'{path}: missing; {data_path} is not a dataset built by diffvox prepare') from error


def dataset_path(name: str, data_dir: str | pathlib.Path, sample_rate: int, channels: int) -> pathlib.Path:
  """Where `make_builder(name, data_dir, sample_rate, channels)` writes its files."""
  return (pathlib.Path(data_dir).expanduser() / name / config_name(sample_rate, channels) / str(VERSION))


def prepared_configs(name: str, data_dir: str | pathlib.Path) -> list[str]:
  """The `<rate>hz_<channels>ch` builds of a dataset present under `data_dir`."""
  root = pathlib.Path(data_dir).expanduser() / name
  return sorted(p.parent.parent.name for p in root.glob(f'*/{VERSION}/dataset_info.json'))
