"""tfds builders: every source on small folders written here (right and wrong layouts), plus real clips."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from diffvox_jax import audio
from diffvox_jax.data import builders, layouts, records
from diffvox_jax.data.store import PreparedDataset

RATE = 8000
tfds.disable_progress_bar()


def signal(seconds: float, channels: int = 2, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
  """Noise on the 16-bit grid, so a PCM_16 file holds it exactly; `(time, channels)` float32."""
  noise = np.random.default_rng(seed).uniform(-amplitude, amplitude, (int(seconds * RATE), channels))
  return (np.round(noise * 32768) / 32768).astype(np.float32)


def write(path: pathlib.Path, samples: np.ndarray, rate: int = RATE) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, samples, rate, subtype='PCM_16')
  return path


def build(name: str, manual_dir: pathlib.Path | None, data_dir: pathlib.Path, rate: int = RATE, channels: int = 2,
          **options) -> builders._LocalAudioBuilder:
  builder = builders.make_builder(name, data_dir, rate, channels, builders.canonical_options(name, **options))
  assert builders.prepare(builder, manual_dir)
  return builder


def split_tracks(name: str, data_dir: pathlib.Path, split: str, rate: int = RATE, channels: int = 2):
  dataset = PreparedDataset(name, split, data_dir, rate, channels)
  return dataset, {entry.name: index for index, entry in enumerate(dataset.tracks)}


def assert_stored(dataset: PreparedDataset, track: int, stream: str, expected: np.ndarray) -> None:
  """The stored stream equals `expected` up to the int16 rounding of the track's scale."""
  stored = dataset.read_track(track, stream)
  assert stored.shape == expected.shape
  np.testing.assert_allclose(stored, expected, rtol=0, atol=dataset.tracks[track].scale * 0.5 + 1e-7)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(samples.mean(axis=1)))
  return float(np.argmax(spectrum) * rate / len(samples))


# ------------------------------------------------------------------------------------------------------ musdb18hq

MUSDB_STREAMS = ('mixture', 'vocals', 'drums', 'bass', 'other')


def write_musdb18hq(root: pathlib.Path, songs: dict[str, str], seconds: float = 0.6) -> dict[str, dict]:
  """`songs`: name -> subset. Returns name -> stream -> samples (mixture = the sum of the stems)."""
  written = {}
  for song_index, (song, subset) in enumerate(songs.items()):
    stems = {s: signal(seconds, amplitude=0.2, seed=10 * song_index + i) for i, s in enumerate(MUSDB_STREAMS[1:])}
    stems['mixture'] = sum(stems.values())
    for stream, samples in stems.items():
      write(root / subset / song / f'{stream}.wav', samples)
    written[song] = stems
  return written


def test_musdb18hq_splits_streams_and_samples(tmp_path):
  songs = {'Actions - One Minute Smile': 'train', 'Artist - Song A': 'train', 'Band - Song B': 'test'}
  written = write_musdb18hq(tmp_path / 'musdb', songs)
  builder = build('musdb18hq', tmp_path / 'musdb', tmp_path / 'tfds')
  assert builder.data_path == builders.dataset_path('musdb18hq', tmp_path / 'tfds', RATE, 2)
  metadata = builders.stored_metadata(builder.data_path)
  assert {split: [e['name'] for e in entries] for split, entries in metadata['splits'].items()} == {
      'train': ['Artist - Song A'], 'validation': ['Actions - One Minute Smile'], 'test': ['Band - Song B']}
  dataset, index = split_tracks('musdb18hq', tmp_path / 'tfds', 'train+validation+test')
  for song, stems in written.items():
    entry = dataset.tracks[index[song]]
    assert entry.streams == ('vocals', 'accompaniment', 'drums', 'bass', 'other', 'mixture')
    assert entry.metadata['artist'] == song.split(' - ')[0]
    for stream in ('vocals', 'drums', 'bass', 'other', 'mixture'):
      assert_stored(dataset, index[song], stream, stems[stream])
    assert_stored(dataset, index[song], 'accompaniment', stems['drums'] + stems['bass'] + stems['other'])
  # The records read back through tfds.data_source alone, in the documented order.
  source = tfds.data_source('musdb18hq/8000hz_2ch', split='test', data_dir=str(tmp_path / 'tfds'))
  entry = records.TrackEntry.from_json(metadata['splits']['test'][0])
  assert len(source) == entry.num_records == len(entry.streams) * 1
  first = source[entry.record_index('vocals', 0)]
  assert (first['track'], first['stream'], first['block']) == (b'Band - Song B', b'vocals', 0)
  assert first['audio'].dtype == np.int16 and first['audio'].shape == (entry.length, 2)


def test_musdb18hq_resampled_to_the_requested_rate_and_channels(tmp_path):
  written = write_musdb18hq(tmp_path / 'musdb', {'Band - Song B': 'test'}, seconds=2.5)
  build('musdb18hq', tmp_path / 'musdb', tmp_path / 'tfds', rate=4000, channels=1)
  assert builders.prepared_configs('musdb18hq', tmp_path / 'tfds') == ['4000hz_1ch']
  dataset, _ = split_tracks('musdb18hq', tmp_path / 'tfds', 'test', rate=4000, channels=1)
  assert dataset.block == 4000 and dataset.tracks[0].num_blocks == 3  # 10000 samples in 1 s blocks
  reference = audio.convert_channels(audio.resample(written['Band - Song B']['vocals'], RATE, 4000), 1)
  assert dataset.tracks[0].length == len(reference) == 10000
  assert_stored(dataset, 0, 'vocals', reference)
  with pytest.raises(builders.DatasetError, match='prepared there: 4000hz_1ch'):
    PreparedDataset('musdb18hq', 'test', tmp_path / 'tfds', RATE, 2)


@pytest.mark.parametrize('breakage, fragment', [
    ('no_root', 'no such folder'), ('no_subsets', 'no train/ or test/ folder'),
    ('empty_subset', 'no tracks'), ('missing_stem', 'missing bass.wav')])
def test_musdb18hq_layout_errors(tmp_path, breakage, fragment):
  root = tmp_path / 'musdb'
  if breakage != 'no_root':
    write_musdb18hq(root, {'Band - Song B': 'test'})
  if breakage == 'no_subsets':
    (root / 'test').rename(root / 'songs')
  if breakage == 'empty_subset':
    shutil.rmtree(root / 'test' / 'Band - Song B')
  if breakage == 'missing_stem':
    (root / 'test' / 'Band - Song B' / 'bass.wav').unlink()
  with pytest.raises(layouts.LayoutError) as error:
    layouts.musdb18hq_tracks(root)
  message = str(error.value)
  assert fragment in message and 'expected MUSDB18-HQ: {train,test}/<song>/' in message and '\n' not in message
  if breakage in ('no_subsets', 'empty_subset'):
    assert 'found' in message


# ----------------------------------------------------------------------------------------------------- musdb18

STEM_FREQUENCIES = {'mixture': 220.0, 'drums': 330.0, 'bass': 110.0, 'other': 550.0, 'vocals': 880.0}


def test_musdb18_reads_stem_mp4_streams(tmp_path):
  if shutil.which('ffmpeg') is None:
    pytest.skip('ffmpeg not on PATH')
  path = tmp_path / 'musdb' / 'test' / 'Band - Song C.stem.mp4'
  path.parent.mkdir(parents=True)
  inputs = [arg for name in audio.STEM_NAMES
            for arg in ('-f', 'lavfi', '-i', f'sine=frequency={STEM_FREQUENCIES[name]}:duration=1')]
  maps = [arg for i in range(len(audio.STEM_NAMES)) for arg in ('-map', str(i))]
  subprocess.run(['ffmpeg', '-v', 'error', '-y', *inputs, *maps, '-c:a', 'aac', '-ac', '2', '-ar', '16000',
                  str(path)], check=True)
  build('musdb18', tmp_path / 'musdb', tmp_path / 'tfds')
  dataset, index = split_tracks('musdb18', tmp_path / 'tfds', 'test')
  track = index['Band - Song C']
  assert dataset.tracks[track].streams == ('vocals', 'accompaniment', 'drums', 'bass', 'other', 'mixture')
  for stream in ('vocals', 'drums', 'bass', 'other', 'mixture'):
    assert dominant_hz(dataset.read_track(track, stream), RATE) == pytest.approx(STEM_FREQUENCIES[stream], abs=2)
  summed = sum(dataset.read_track(track, s) for s in ('drums', 'bass', 'other'))
  np.testing.assert_allclose(dataset.read_track(track, 'accompaniment'), summed, atol=2 * dataset.tracks[track].scale)


def test_musdb18_layout_error(tmp_path):
  (tmp_path / 'musdb' / 'train').mkdir(parents=True)
  (tmp_path / 'musdb' / 'train' / 'song.mp3').write_bytes(b'')
  with pytest.raises(layouts.LayoutError, match=r'no tracks; expected MUSDB18: .*found train/: song.mp3'):
    layouts.musdb18_tracks(tmp_path / 'musdb')


# ---------------------------------------------------------------------------------------------------- moisesdb

def write_moisesdb_track(root: pathlib.Path, track_id: str, stems: dict[str, list[np.ndarray]]) -> None:
  track_dir = root / 'provider' / track_id
  listing = []
  for stem_name, parts in stems.items():
    tracks = []
    for part_index, samples in enumerate(parts):
      file_id = f'{stem_name}-{part_index}'
      write(track_dir / stem_name / f'{file_id}.wav', samples)
      tracks.append({'id': file_id, 'extension': 'wav', 'trackType': stem_name, 'has_bleed': False})
    listing.append({'stemName': stem_name, 'tracks': tracks})
  (track_dir / 'data.json').write_text(json.dumps({'song': f'song {track_id}', 'artist': 'someone',
                                                   'genre': 'pop', 'stems': listing}))


def test_moisesdb_groups_stems_as_vocals_drums_bass_other(tmp_path):
  parts = {name: signal(0.5, seed=i) for i, name in enumerate(['vocals', 'drums', 'bass', 'guitar', 'piano'])}
  longer_guitar = signal(0.75, seed=9)
  write_moisesdb_track(tmp_path / 'moises', 'track-a', {'vocals': [parts['vocals']], 'drums': [parts['drums']],
                                                        'bass': [parts['bass']],
                                                        'guitar': [parts['guitar'], longer_guitar],
                                                        'piano': [parts['piano']]})
  build('moisesdb', tmp_path / 'moises', tmp_path / 'tfds')
  bucket = int(hashlib.sha1(b'track-a').hexdigest(), 16) % 20
  split = 'validation' if bucket == 0 else 'test' if bucket == 1 else 'train'
  dataset, index = split_tracks('moisesdb', tmp_path / 'tfds', split)
  track = index['track-a']
  assert dataset.tracks[track].streams == ('vocals', 'accompaniment', 'drums', 'bass', 'other')
  assert dataset.tracks[track].metadata['genre'] == 'pop'

  def pad(samples):
    return np.pad(samples, ((0, len(longer_guitar) - len(samples)), (0, 0)))

  other = pad(parts['guitar']) + longer_guitar + pad(parts['piano'])
  assert_stored(dataset, track, 'vocals', pad(parts['vocals']))
  assert_stored(dataset, track, 'other', other)
  assert_stored(dataset, track, 'accompaniment', pad(parts['drums']) + pad(parts['bass']) + other)


def test_moisesdb_layout_errors(tmp_path):
  root = tmp_path / 'moises'
  root.mkdir()
  (root / 'readme.txt').write_text('')
  with pytest.raises(layouts.LayoutError, match=r'no <provider>/<track id>/data.json found.*found readme.txt'):
    layouts.moisesdb_tracks(root)
  write_moisesdb_track(root, 'track-b', {'vocals': [signal(0.2)], 'bass': [signal(0.2)]})
  (root / 'provider' / 'track-b' / 'bass' / 'bass-0.wav').unlink()
  with pytest.raises(layouts.LayoutError, match=r'bass-0.wav: listed in .*data.json but missing'):
    layouts.moisesdb_tracks(root)
  (root / 'provider' / 'track-b' / 'data.json').write_text('{"song": "x"}')
  with pytest.raises(layouts.LayoutError, match='not a MoisesDB data.json'):
    layouts.moisesdb_tracks(root)


# ------------------------------------------------------------------------------------------------------- mir1k

def test_mir1k_original_layout_splits_channels_by_convention(tmp_path):
  files = {'abjones_1_01': signal(0.4, seed=1), 'Ani_2_03': signal(0.4, seed=2), 'bobon_3_02': signal(0.4, seed=3)}
  for name, both in files.items():
    write(tmp_path / 'MIR-1K' / 'Wavfile' / f'{name}.wav', both)
  build('mir1k', tmp_path / 'MIR-1K', tmp_path / 'tfds', channels=1)
  for name, split in (('abjones_1_01', 'train'), ('Ani_2_03', 'validation'), ('bobon_3_02', 'test')):
    dataset, index = split_tracks('mir1k', tmp_path / 'tfds', split, channels=1)
    assert list(index) == [name] and dataset.tracks[0].metadata['singer'] == name.split('_')[0]
    assert_stored(dataset, 0, 'vocals', files[name][:, 1:])  # right channel: voice
    assert_stored(dataset, 0, 'accompaniment', files[name][:, :1])  # left channel: accompaniment
    assert dataset.tracks[0].streams == ('vocals', 'accompaniment')


def test_mir1k_split_layout_on_real_clips(tmp_path, shared_data):
  root = tmp_path / 'mir1k'
  chosen = {'train': sorted((shared_data / 'mir1k' / 'train').glob('*/'))[:1],
            'dev': sorted((shared_data / 'mir1k' / 'dev').glob('*/'))[:2]}
  for split, clips in chosen.items():
    (root / split).mkdir(parents=True)
    os.symlink(shared_data / 'mir1k' / split / 'manifest.json', root / split / 'manifest.json')
    for clip in clips:
      os.symlink(clip, root / split / clip.name)
  build('mir1k', root, tmp_path / 'tfds', rate=16000, channels=1)
  dataset, index = split_tracks('mir1k', tmp_path / 'tfds', 'validation', rate=16000, channels=1)
  assert sorted(index) == sorted(c.name for c in chosen['dev'])
  for clip in chosen['dev']:
    track = index[clip.name]
    assert dataset.tracks[track].metadata['singer'] in ('Ani', 'heycat')
    for stream in ('vocals', 'accompaniment'):
      reference, rate = sf.read(clip / f'{stream}.flac', dtype='float32', always_2d=True)
      assert rate == 16000
      assert_stored(dataset, track, stream, reference)


def test_mir1k_layout_errors(tmp_path):
  write(tmp_path / 'mir1k' / 'dev' / 'clip_1' / 'vocals.flac', signal(0.1, channels=1))
  with pytest.raises(layouts.LayoutError, match=r'clip_1: needs vocals and accompaniment files.*found vocals.flac'):
    layouts.mir1k_tracks(tmp_path / 'mir1k')
  (tmp_path / 'empty' / 'Wavfile').mkdir(parents=True)
  with pytest.raises(layouts.LayoutError, match=r'Wavfile: no .wav files; expected MIR-1K'):
    layouts.mir1k_tracks(tmp_path / 'empty')


# ------------------------------------------------------------------------------------------------ stems_folder

def test_stems_folder_mixture_minus_vocals_or_sum_of_stems(tmp_path):
  root = tmp_path / 'songs'
  vocals_a, mixture_a = signal(0.5, seed=1), signal(0.5, seed=2)
  write(root / 'song a' / 'vocals.wav', vocals_a)
  write(root / 'song a' / 'mixture.flac', mixture_a)
  vocals_b, guitar_b, keys_b = signal(0.5, seed=3), signal(0.5, seed=4), signal(0.5, seed=5)
  write(root / 'song b' / 'vocals.flac', vocals_b)
  write(root / 'song b' / 'guitar.wav', guitar_b)
  write(root / 'song b' / 'keys.wav', keys_b)
  build('stems_folder', root, tmp_path / 'tfds')
  dataset, index = split_tracks('stems_folder', tmp_path / 'tfds', 'train')
  a, b = index['song a'], index['song b']
  assert dataset.tracks[a].streams == ('vocals', 'accompaniment', 'mixture')
  assert dataset.tracks[b].streams == ('vocals', 'accompaniment', 'guitar', 'keys')
  assert_stored(dataset, a, 'accompaniment', mixture_a - vocals_a)
  assert_stored(dataset, a, 'mixture', mixture_a)
  assert_stored(dataset, b, 'accompaniment', guitar_b + keys_b)
  assert_stored(dataset, b, 'keys', keys_b)


def test_stems_folder_vocals_stem_option_and_split_folders(tmp_path):
  root = tmp_path / 'songs'
  for split, song, seed in (('train', 'one', 1), ('test', 'two', 2)):
    write(root / split / song / 'voice.wav', signal(0.3, seed=seed))
    write(root / split / song / 'backing.wav', signal(0.3, seed=seed + 10))
  build('stems_folder', root, tmp_path / 'tfds', vocals_stem='voice')
  dataset, index = split_tracks('stems_folder', tmp_path / 'tfds', 'test')
  assert list(index) == ['two']
  assert_stored(dataset, 0, 'vocals', signal(0.3, seed=2))
  assert_stored(dataset, 0, 'accompaniment', signal(0.3, seed=12))


def test_stems_folder_layout_errors(tmp_path):
  root = tmp_path / 'songs'
  write(root / 'song' / 'guitar.wav', signal(0.1))
  with pytest.raises(layouts.LayoutError, match=r'song: needs vocals.\* and further stems .*found guitar.wav'):
    layouts.stems_folder_tracks(root)
  write(root / 'song' / 'vocals.wav', signal(0.1))
  (root / 'song' / 'guitar.wav').unlink()
  with pytest.raises(layouts.LayoutError, match='needs vocals'):
    layouts.stems_folder_tracks(root)
  write(root / 'song' / 'accompaniment.wav', signal(0.1))
  write(root / 'song' / 'bass.wav', signal(0.1))
  with pytest.raises(layouts.LayoutError, match='accompaniment file beside other non-vocal stems is ambiguous'):
    layouts.stems_folder_tracks(root)
  shutil.rmtree(root / 'song')
  with pytest.raises(layouts.LayoutError, match='no song folders.*found an empty folder'):
    layouts.stems_folder_tracks(root)


def test_stems_folder_on_the_real_musdb_sample(tmp_path, shared_data):
  song = shared_data / 'musdb_sample' / 'Music Delta - 80s Rock'
  build('stems_folder', song.parent, tmp_path / 'tfds', rate=44100)
  dataset, index = split_tracks('stems_folder', tmp_path / 'tfds', 'train', rate=44100)
  track = index[song.name]
  files = {name: sf.read(song / f'{name}.flac', dtype='float32', always_2d=True)[0]
           for name in ('mixture', 'vocals', 'drums', 'bass', 'other')}
  assert dataset.tracks[track].streams == ('vocals', 'accompaniment', 'bass', 'drums', 'other', 'mixture')
  for stream, reference in files.items():
    assert_stored(dataset, track, stream, reference)
  assert_stored(dataset, track, 'accompaniment', files['drums'] + files['bass'] + files['other'])


# --------------------------------------------------------------------------------------------------- synthetic

def test_synthetic_songs_split_by_seed(tmp_path):
  from diffvox_jax.data import synthetic
  try:
    synthetic.check_tools()
  except synthetic.MissingToolError as error:
    pytest.skip(str(error))
  build('synthetic', None, tmp_path / 'tfds', rate=16000, num_songs=3, max_seconds=1.5)
  metadata = builders.stored_metadata(builders.dataset_path('synthetic', tmp_path / 'tfds', 16000, 2))
  assert metadata['build'] == {'num_songs': 3, 'max_seconds': 1.5}
  assert {split: [e['metadata']['seed'] for e in entries] for split, entries in metadata['splits'].items()} == {
      'train': [0], 'validation': [1], 'test': [2]}
  dataset, _ = split_tracks('synthetic', tmp_path / 'tfds', 'test', rate=16000)
  song = synthetic.render_song(2, 16000, max_seconds=1.5)
  assert dataset.tracks[0].streams == ('vocals', 'accompaniment', 'drums', 'bass', 'other')
  assert dataset.tracks[0].metadata['song'] == song.name
  assert_stored(dataset, 0, 'vocals', song.stems['vocals'])
  assert_stored(dataset, 0, 'accompaniment', song.stems['drums'] + song.stems['bass'] + song.stems['other'])
  with pytest.raises(layouts.LayoutError, match='at least 3'):
    layouts.synthetic_tracks(2)


# ------------------------------------------------------------------------------------------ prepare and storage

def test_prepare_is_idempotent_and_checks_build_options(tmp_path):
  write(tmp_path / 'songs' / 'song' / 'vocals.wav', signal(0.2))
  write(tmp_path / 'songs' / 'song' / 'mixture.wav', signal(0.2, seed=1))
  builder = build('stems_folder', tmp_path / 'songs', tmp_path / 'tfds')
  files = sorted(pathlib.Path(builder.data_path).glob('*.array_record*'))
  stamps = [f.stat().st_mtime_ns for f in files]
  again = builders.make_builder('stems_folder', tmp_path / 'tfds', RATE, 2)
  assert not builders.prepare(again, tmp_path / 'songs')
  assert [f.stat().st_mtime_ns for f in files] == stamps
  other = builders.make_builder('stems_folder', tmp_path / 'tfds', RATE, 2,
                                builders.canonical_options('stems_folder', vocals_stem='voice'))
  with pytest.raises(builders.DatasetError, match='was built with {"vocals_stem": "vocals"}'):
    builders.prepare(other, tmp_path / 'songs')
  with pytest.raises(builders.DatasetError, match='has no split validation'):
    PreparedDataset('stems_folder', 'train+validation', tmp_path / 'tfds', RATE, 2)
  with pytest.raises(builders.DatasetError, match='takes no num_songs'):
    builders.canonical_options('musdb18hq', num_songs=3)
  with pytest.raises(layouts.LayoutError, match='no such folder, or an empty one; expected'):
    builders.prepare(builders.make_builder('mir1k', tmp_path / 'tfds', RATE, 2), tmp_path / 'missing')


def test_example_keys_follow_storage_order_and_spread_over_buckets():
  from tensorflow_datasets.core import shuffle
  num_tracks = 50
  keys = [records.example_key(t, num_tracks, r) for t in range(num_tracks) for r in range(3)]
  assert keys == sorted(keys) and len(set(keys)) == len(keys) and keys[-1] < 2**128
  buckets = [shuffle.get_bucket_number(records.example_key(t, num_tracks, 0), shuffle.BUCKETS_NUMBER)
             for t in range(num_tracks)]
  assert len(set(buckets)) == num_tracks


def test_quantize_keeps_relative_levels():
  streams = {'vocals': np.array([[0.5], [-0.25]], np.float32), 'accompaniment': np.array([[2.0], [1.0]], np.float32)}
  quantized, scale = records.quantize(streams)
  assert scale == pytest.approx(2.0 / 32767)
  assert quantized['accompaniment'][:, 0].tolist() == [32767, 16384]
  assert quantized['vocals'][:, 0].tolist() == [8192, -4096]


def test_prepare_command(tmp_path):
  write(tmp_path / 'songs' / 'song' / 'vocals.wav', signal(0.2))
  write(tmp_path / 'songs' / 'song' / 'drums.wav', signal(0.2, seed=1))
  command = [sys.executable, '-m', 'diffvox_jax.cli', 'prepare', '--dataset', 'stems_folder', '--data-dir',
             str(tmp_path / 'tfds'), '--sample-rate', str(RATE), '--channels', '1']
  done = subprocess.run([*command, '--manual-dir', str(tmp_path / 'songs')], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert 'built: ' in done.stdout and 'train' in done.stdout
  assert (builders.dataset_path('stems_folder', tmp_path / 'tfds', RATE, 1) / 'dataset_info.json').is_file()
  command[command.index('--data-dir') + 1] = str(tmp_path / 'other')
  failed = subprocess.run([*command, '--manual-dir', str(tmp_path / 'nowhere')], capture_output=True, text=True)
  assert failed.returncode == 2
  assert failed.stderr.strip().splitlines()[-1].startswith(f'diffvox: {tmp_path / "nowhere"}: no such folder')
