"""Finding the tracks of a local dataset folder: one discovery function per source layout.

Each `*_tracks` function checks a folder against the layout its dataset needs and returns `TrackSource`s (name,
split, metadata and a loader); nothing is decoded until a loader runs. A missing or malformed folder raises one
`LayoutError` whose message names the folder, the layout that was expected and what was found there.

Splits:
- musdb18hq / musdb18: `train` minus the 14 tracks of the official sigsep validation list (`validation`), `test`.
  The paper trains on all 100 training tracks: `data.train_split='train+validation'`.
- moisesdb: no official split; `sha1(track id)` decides (5% validation, 5% test, the rest train).
- mir1k, original layout (`Wavfile/<singer>_<song>_<clip>.wav`): by singer, as customary: abjones and amy train,
  Ani and heycat validation, the other singers test. Split layout (`<split>/<clip>/`): the folder names, with
  `dev`/`valid` read as `validation`.
- stems_folder: `<root>/<song>/...` is all `train`; `<root>/{train,validation,test}/<song>/...` keeps its splits.
- synthetic: the song seeds 0..N-1; the last max(1, N // 10) seeds are `test`, the max(1, N // 10) before them
  `validation`, the rest `train`.
"""

import dataclasses
import functools
import hashlib
import json
import pathlib
from collections.abc import Callable, Iterable

import numpy as np

from diffvox_jax import audio

MUSDB_STEMS = ('drums', 'bass', 'other')  # the non-vocal stems of MUSDB18 (and of MoisesDB's 4-stem grouping)
MUSDB_VALIDATION = frozenset({  # sigsep musdb `validation_tracks` (musdb/configs/mus.yaml)
    'Actions - One Minute Smile',
    'Clara Berry And Wooldog - Waltz For My Victims',
    'Johnny Lokke - Promises & Lies',
    'Patrick Talbot - A Reason To Leave',
    'Triviul - Angelsaint',
    'Alexander Ross - Goodbye Bolero',
    'Fergessen - Nos Palpitants',
    'Leaf - Summerghost',
    'Skelpolu - Human Mistakes',
    'Young Griffo - Pennies',
    'ANiMAL - Rockshow',
    'James May - On The Line',
    'Meaxic - Take A Step',
    'Traffic Experiment - Sirens',
})
MIR1K_SPLIT_BY_SINGER = {'abjones': 'train', 'amy': 'train', 'Ani': 'validation', 'heycat': 'validation'}
SPLIT_ALIASES = {'train': 'train', 'dev': 'validation', 'valid': 'validation', 'validation': 'validation',
                 'test': 'test'}
STEM_SUFFIXES = ('.wav', '.flac', '.mp3')
MIXTURE_NAME = 'mixture'
MOISESDB_VALIDATION_BUCKETS = frozenset({0})  # sha1(track id) % 20
MOISESDB_TEST_BUCKETS = frozenset({1})
FOUND_LISTED = 6  # entries named in a LayoutError


class LayoutError(ValueError):
  """A dataset folder without the expected layout; the message says what was expected and what was found."""


@dataclasses.dataclass(frozen=True)
class TrackAudio:
  """The audio of one track at the requested rate and channel count, every array `(time, channels)` float32.

  Attributes:
    vocals: the singing voice.
    accompaniment: everything else (the sum of `stems` where they exist).
    stems: the individual non-vocal stems (name -> audio) when the source has at least two, else empty.
    mixture: the source's own mixture file, where it has one (used for evaluation only).
    metadata: facts only known once decoded (a synthetic song's chorale and sung notes), JSON-serialisable.
  """
  vocals: np.ndarray
  accompaniment: np.ndarray
  stems: dict[str, np.ndarray]
  mixture: np.ndarray | None = None
  metadata: dict = dataclasses.field(default_factory=dict)


Loader = Callable[[int, int], TrackAudio]  # (sample_rate, channels) -> TrackAudio


@dataclasses.dataclass(frozen=True)
class TrackSource:
  """One track of a dataset folder: `load(sample_rate, channels)` decodes it."""
  name: str
  split: str
  load: Loader
  metadata: dict


def assemble(vocals: np.ndarray, others: dict[str, np.ndarray], mixture: np.ndarray | None) -> TrackAudio:
  """Builds a TrackAudio: accompaniment = sum of `others`, or `mixture - vocals` when there are none.

  Arrays of different lengths are zero-padded to the longest.
  """
  arrays = [vocals, *others.values()] + ([] if mixture is None else [mixture])
  length = max(len(a) for a in arrays)
  pad = functools.partial(_pad_to, length=length)
  vocals, others = pad(vocals), {name: pad(a) for name, a in others.items()}
  mixture = None if mixture is None else pad(mixture)
  if others:
    accompaniment = functools.reduce(np.add, others.values())
  elif mixture is not None:
    accompaniment = mixture - vocals
  else:
    raise ValueError('a track needs non-vocal stems or a mixture')
  return TrackAudio(vocals, accompaniment, others if len(others) >= 2 else {}, mixture)


def musdb18hq_tracks(root: pathlib.Path) -> list[TrackSource]:
  """MUSDB18-HQ: `{train,test}/<song>/{mixture,vocals,drums,bass,other}.wav`."""
  expected = 'MUSDB18-HQ: {train,test}/<song>/{mixture,vocals,drums,bass,other}.wav'
  tracks = []
  for subset, song_dir in _musdb_subsets(root, expected, lambda p: p.is_dir()):
    files = {name: song_dir / f'{name}.wav' for name in (MIXTURE_NAME, 'vocals', *MUSDB_STEMS)}
    missing = sorted(f'{name}.wav' for name, path in files.items() if not path.is_file())
    if missing:
      raise LayoutError(f'{song_dir}: missing {", ".join(missing)}; expected {expected}')
    loader = functools.partial(_load_stem_files, vocals=[files['vocals']],
                               others={name: [files[name]] for name in MUSDB_STEMS}, mixture=[files[MIXTURE_NAME]])
    tracks.append(TrackSource(song_dir.name, _musdb_split(subset, song_dir.name), loader,
                              _musdb_metadata(subset, song_dir.name)))
  return tracks


def musdb18_tracks(root: pathlib.Path) -> list[TrackSource]:
  """MUSDB18 (compressed): `{train,test}/<song>.stem.mp4` (streams mixture, drums, bass, other, vocals)."""
  expected = 'MUSDB18: {train,test}/<song>.stem.mp4'
  tracks = []
  for subset, path in _musdb_subsets(root, expected, lambda p: p.is_file() and p.name.endswith('.stem.mp4')):
    name = path.name.removesuffix('.stem.mp4')
    tracks.append(TrackSource(name, _musdb_split(subset, name), functools.partial(_load_stem_mp4, path),
                              _musdb_metadata(subset, name)))
  return tracks


def moisesdb_tracks(root: pathlib.Path) -> list[TrackSource]:
  """MoisesDB: `<provider>/<track id>/data.json` with `<stem name>/<file id>.<ext>` folders beside it.

  Vocals are the `vocals` stem; the rest is grouped as MUSDB's `drums`, `bass` and `other` (everything else), whose
  sum is the accompaniment. `root` may also be a single provider folder.
  """
  expected = 'MoisesDB: <provider>/<track id>/data.json with <stem>/<file id>.<ext> files'
  _require_dir(root, expected)
  manifests = sorted(root.glob('*/*/data.json')) or sorted(root.glob('*/data.json'))
  if not manifests:
    raise LayoutError(f'{root}: no <provider>/<track id>/data.json found; expected {expected}; '
                      f'found {_listing(root)}')
  tracks = []
  for manifest in manifests:
    track_dir = manifest.parent
    try:
      description = json.loads(manifest.read_text())
      groups = _moisesdb_groups(track_dir, description['stems'])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
      raise LayoutError(f'{manifest}: not a MoisesDB data.json ({type(error).__name__}: {error}); '
                        f'expected {{"stems": [{{"stemName", "tracks": [{{"id", "extension"}}]}}]}}') from error
    if not any(group != 'vocals' for group in groups):
      raise LayoutError(f'{track_dir}: no non-vocal stem listed in data.json; expected {expected}')
    vocals = groups.pop('vocals', [])
    loader = functools.partial(_load_stem_files, vocals=vocals, others=groups, mixture=None)
    bucket = int(hashlib.sha1(track_dir.name.encode()).hexdigest(), 16) % 20
    split = ('validation' if bucket in MOISESDB_VALIDATION_BUCKETS
             else 'test' if bucket in MOISESDB_TEST_BUCKETS else 'train')
    metadata = {'provider': track_dir.parent.name, 'id': track_dir.name, 'artist': description.get('artist', ''),
                'song': description.get('song', ''), 'genre': description.get('genre', ''),
                'stems': sorted(s.get('stemName', '') for s in description['stems'])}
    tracks.append(TrackSource(track_dir.name, split, loader, metadata))
  return tracks


def mir1k_tracks(root: pathlib.Path) -> list[TrackSource]:
  """MIR-1K: original `Wavfile/*.wav` (left accompaniment, right voice) or `<split>/<clip>/{vocals,accompaniment}.*`."""
  expected = ('MIR-1K: Wavfile/<singer>_<song>_<clip>.wav (stereo: left accompaniment, right voice), '
              'or <split>/<clip>/{vocals,accompaniment}.{wav,flac}')
  _require_dir(root, expected)
  wav_dir = root / 'Wavfile'
  if wav_dir.is_dir():
    files = sorted(wav_dir.glob('*.wav'))
    if not files:
      raise LayoutError(f'{wav_dir}: no .wav files; expected {expected}')
    tracks = []
    for path in files:
      singer = path.stem.split('_')[0]
      tracks.append(TrackSource(path.stem, MIR1K_SPLIT_BY_SINGER.get(singer, 'test'),
                                functools.partial(_load_mir1k_wav, path), {'singer': singer, 'file': path.name}))
    return tracks
  tracks = []
  for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
    singers = _mir1k_manifest_singers(split_dir)
    for clip_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
      vocals, accompaniment = _stem_file(clip_dir, 'vocals'), _stem_file(clip_dir, 'accompaniment')
      if vocals is None or accompaniment is None:
        raise LayoutError(f'{clip_dir}: needs vocals and accompaniment files; expected {expected}; '
                          f'found {_listing(clip_dir)}')
      loader = functools.partial(_load_stem_files, vocals=[vocals], others={'accompaniment': [accompaniment]},
                                 mixture=None)
      singer = singers.get(clip_dir.name, clip_dir.name.split('_')[0])
      tracks.append(TrackSource(clip_dir.name, SPLIT_ALIASES.get(split_dir.name, split_dir.name), loader,
                                {'singer': singer, 'folder': f'{split_dir.name}/{clip_dir.name}'}))
  if not tracks:
    raise LayoutError(f'{root}: no MIR-1K clips; expected {expected}; found {_listing(root)}')
  return tracks


def stems_folder_tracks(root: pathlib.Path, vocals_stem: str = 'vocals') -> list[TrackSource]:
  """Any `<song>/<stem>.{wav,flac,mp3}` folder (or `{train,validation,test}/<song>/...`).

  Every song needs the `vocals_stem` file and either other stems or a `mixture` file. The accompaniment is the sum
  of the stems other than vocals and mixture, or mixture - vocals when those are the only two.
  """
  expected = (f'<song>/<stem>.{{wav,flac,mp3}} (or <split>/<song>/...), each song with {vocals_stem}.* and '
              f'further stems or a {MIXTURE_NAME}.* file')
  _require_dir(root, expected)
  subdirs = sorted(p for p in root.iterdir() if p.is_dir())
  if subdirs and all(p.name in SPLIT_ALIASES for p in subdirs):
    songs = [(SPLIT_ALIASES[split_dir.name], song) for split_dir in subdirs
             for song in sorted(p for p in split_dir.iterdir() if p.is_dir())]
  else:
    songs = [('train', song) for song in subdirs]
  if not songs:
    raise LayoutError(f'{root}: no song folders; expected {expected}; found {_listing(root)}')
  tracks = []
  for split, song_dir in songs:
    files = {p.stem: p for p in sorted(song_dir.iterdir()) if p.is_file() and p.suffix.lower() in STEM_SUFFIXES}
    vocals, mixture = files.pop(vocals_stem, None), files.pop(MIXTURE_NAME, None)
    if vocals is None or not (files or mixture):
      raise LayoutError(f'{song_dir}: needs {vocals_stem}.* and further stems or {MIXTURE_NAME}.*; expected '
                        f'{expected}; found {_listing(song_dir)}')
    if 'vocals' in files:
      raise LayoutError(f'{song_dir}: a vocals file that is not the vocals stem ({vocals_stem}); rename it')
    if 'accompaniment' in files and len(files) > 1:
      raise LayoutError(f'{song_dir}: an accompaniment file beside other non-vocal stems is ambiguous (is it their '
                        f'sum?); keep either accompaniment.* or the individual stems; found {_listing(song_dir)}')
    loader = functools.partial(_load_stem_files, vocals=[vocals], others={n: [p] for n, p in files.items()},
                               mixture=None if mixture is None else [mixture])
    stem_names = sorted([vocals.name, *(p.name for p in files.values())] + ([mixture.name] if mixture else []))
    tracks.append(TrackSource(song_dir.name, split, loader, {'files': stem_names}))
  return tracks


def synthetic_tracks(num_songs: int, max_seconds: float | None = None) -> list[TrackSource]:
  """Songs from `synthetic.render_song` for the seeds 0..num_songs-1 (at least 3: train, validation, test)."""
  if num_songs < 3:
    raise LayoutError(f'synthetic: --num-songs must be at least 3 (train, validation and test), got {num_songs}')
  held_out = max(1, num_songs // 10)
  tracks = []
  for seed in range(num_songs):
    split = ('test' if seed >= num_songs - held_out
             else 'validation' if seed >= num_songs - 2 * held_out else 'train')
    tracks.append(TrackSource(f'synthetic-{seed:06d}', split,
                              functools.partial(_load_synthetic, seed, max_seconds), {'seed': seed}))
  return tracks


# ----------------------------------------------------------------------------------------------------- helpers

def _pad_to(array: np.ndarray, length: int) -> np.ndarray:
  return array if len(array) == length else np.pad(array, ((0, length - len(array)), (0, 0)))


def _listing(folder: pathlib.Path) -> str:
  """A short description of a folder's entries for error messages."""
  entries = sorted(folder.iterdir())
  if not entries:
    return 'an empty folder'
  names = [p.name + ('/' if p.is_dir() else '') for p in entries[:FOUND_LISTED]]
  more = f' and {len(entries) - FOUND_LISTED} more' if len(entries) > FOUND_LISTED else ''
  return ', '.join(names) + more


def _require_dir(root: pathlib.Path, expected: str) -> None:
  if not root.exists():
    raise LayoutError(f'{root}: no such folder; expected {expected}')
  if not root.is_dir():
    raise LayoutError(f'{root}: not a folder; expected {expected}')


def _musdb_subsets(root: pathlib.Path, expected: str,
                   is_track: Callable[[pathlib.Path], bool]) -> Iterable[tuple[str, pathlib.Path]]:
  """(subset, entry) for the track entries of `train/` and `test/`; an error when there are none."""
  _require_dir(root, expected)
  subsets = [name for name in ('train', 'test') if (root / name).is_dir()]
  if not subsets:
    raise LayoutError(f'{root}: no train/ or test/ folder; expected {expected}; found {_listing(root)}')
  entries = [(subset, p) for subset in subsets for p in sorted((root / subset).iterdir()) if is_track(p)]
  if not entries:
    found = '; '.join(f'{subset}/: {_listing(root / subset)}' for subset in subsets)
    raise LayoutError(f'{root}: no tracks; expected {expected}; found {found}')
  return entries


def _musdb_split(subset: str, name: str) -> str:
  return 'validation' if subset == 'train' and name in MUSDB_VALIDATION else subset


def _musdb_metadata(subset: str, name: str) -> dict:
  artist, _, title = name.partition(' - ')
  return {'subset': subset, 'artist': artist, 'title': title}


def _stem_file(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
  return next((folder / f'{stem}{s}' for s in STEM_SUFFIXES if (folder / f'{stem}{s}').is_file()), None)


def _mir1k_manifest_singers(split_dir: pathlib.Path) -> dict[str, str]:
  """clip -> singer from the split's manifest.json, where there is one."""
  manifest = split_dir / 'manifest.json'
  if not manifest.is_file():
    return {}
  try:
    return {entry['clip']: entry['singer'] for entry in json.loads(manifest.read_text())}
  except (json.JSONDecodeError, KeyError, TypeError) as error:
    raise LayoutError(f'{manifest}: expected a list of {{"clip", "singer", ...}} entries ({error})') from error


def _moisesdb_groups(track_dir: pathlib.Path, stems: list[dict]) -> dict[str, list[pathlib.Path]]:
  """MoisesDB stem files grouped as vocals, drums, bass and other; a listed file that is missing is an error."""
  groups: dict[str, list[pathlib.Path]] = {}
  for stem in stems:
    stem_name = stem['stemName']
    group = stem_name if stem_name in ('vocals', 'drums', 'bass') else 'other'
    for part in stem['tracks']:
      path = track_dir / stem_name / f'{part["id"]}.{part["extension"]}'
      if not path.is_file():
        raise LayoutError(f'{path}: listed in {track_dir / "data.json"} but missing')
      groups.setdefault(group, []).append(path)
  return groups


def _load_files(paths: list[pathlib.Path], sample_rate: int, channels: int) -> np.ndarray:
  """The sum of several files (zero-padded to the longest), `(time, channels)` float32."""
  arrays = [audio.load_audio(path, sample_rate, channels) for path in paths]
  length = max(len(a) for a in arrays)
  return functools.reduce(np.add, (_pad_to(a, length) for a in arrays))


def _load_stem_files(sample_rate: int, channels: int, *, vocals: list[pathlib.Path],
                     others: dict[str, list[pathlib.Path]], mixture: list[pathlib.Path] | None) -> TrackAudio:
  other_audio = {name: _load_files(paths, sample_rate, channels) for name, paths in others.items()}
  if vocals:
    vocal_audio = _load_files(vocals, sample_rate, channels)
  else:  # an instrumental track (MoisesDB has a few): silent vocals
    vocal_audio = np.zeros((max(len(a) for a in other_audio.values()), channels), np.float32)
  mixture_audio = None if mixture is None else _load_files(mixture, sample_rate, channels)
  return assemble(vocal_audio, other_audio, mixture_audio)


def _load_stem_mp4(path: pathlib.Path, sample_rate: int, channels: int) -> TrackAudio:
  streams, rate = audio.read_stems(path)
  try:
    converted = {name: audio.convert_channels(audio.resample(a, rate, sample_rate), channels)
                 for name, a in streams.items()}
  except ValueError as error:
    raise audio.AudioError(f'{path}: {error}') from error
  return assemble(converted['vocals'], {name: converted[name] for name in MUSDB_STEMS}, converted[MIXTURE_NAME])


def _load_mir1k_wav(path: pathlib.Path, sample_rate: int, channels: int) -> TrackAudio:
  """An original MIR-1K file: left channel accompaniment, right channel voice."""
  both, rate = audio.read_audio(path)
  if both.shape[1] != 2:
    raise audio.AudioError(f'{path}: MIR-1K files are stereo (left accompaniment, right voice), '
                           f'found {both.shape[1]} channel(s)')

  def convert(channel: np.ndarray) -> np.ndarray:
    return audio.convert_channels(audio.resample(channel, rate, sample_rate), channels)

  return assemble(convert(both[:, 1:]), {'accompaniment': convert(both[:, :1])}, None)


def _load_synthetic(seed: int, max_seconds: float | None, sample_rate: int, channels: int) -> TrackAudio:
  from diffvox_jax.data import synthetic  # noqa: PLC0415 (needs Festival/FluidSynth only when used)

  song = synthetic.render_song(seed, sample_rate, max_seconds=max_seconds)
  stems = {name: audio.convert_channels(a, channels) for name, a in song.stems.items()}
  vocals = stems.pop('vocals')
  track = assemble(vocals, stems, None)
  notes = [[float(n.start_s), float(n.end_s), int(n.midi_pitch)] for n in song.notes]
  return dataclasses.replace(track, metadata={'song': song.name, 'chorale': song.metadata['chorale'],
                                                'singer': song.metadata['singer'], 'notes': notes})
