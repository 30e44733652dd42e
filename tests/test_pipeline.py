"""The grain input pipeline: invariants of every augmentation, silence dropping, determinism, resumption, sharding."""

import pathlib
import pickle

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from diffvox_jax.config import load_config
from diffvox_jax.data import augment, builders, pipeline
from diffvox_jax.data.store import PreparedDataset

RATE = 16000
SEGMENT = 256
BATCH = 8
NUM_MARKED = 6
TRACK_SECONDS = 1.5  # 24000 samples: crops cross the 16000-sample record blocks
OFF = {'remix_prob': 0.0, 'remix_stems_prob': 0.0, 'gain_prob': 0.0, 'polarity_prob': 0.0, 'swap_prob': 0.0,
       'pitch_prob': 0.0}
tfds.disable_progress_bar()


def constant(left: float, right: float, seconds: float = TRACK_SECONDS) -> np.ndarray:
  return np.tile(np.array([[left, right]], np.float32), (int(seconds * RATE), 1))


# Track i of the marked dataset: every stem is constant, with values that identify the track it came from.
def marked_vocals(i: int) -> np.ndarray:
  return constant(0.10 + 0.01 * i, 0.05 + 0.01 * i)


def marked_bass(i: int) -> np.ndarray:
  return constant(0.2 + 0.02 * i, 0.1)


def marked_drums(i: int) -> np.ndarray:
  return constant(0.001 * (i + 1), 0.1)


def write_song(folder: pathlib.Path, stems: dict[str, np.ndarray]) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for name, samples in stems.items():
    sf.write(folder / f'{name}.wav', samples, RATE, subtype='FLOAT')


def build(name: str, root: pathlib.Path, data_dir: pathlib.Path) -> None:
  assert builders.prepare(builders.make_builder(name, data_dir, RATE, 2), root)


@pytest.fixture(scope='module')
def marked_dir(tmp_path_factory) -> pathlib.Path:
  """`stems_folder`: 6 tracks of constant marked stems; `mir1k`: 2 tracks with negative constant vocals."""
  base = tmp_path_factory.mktemp('marked')
  for i in range(NUM_MARKED):
    write_song(base / 'songs' / f'song{i}', {'vocals': marked_vocals(i), 'bass': marked_bass(i),
                                             'drums': marked_drums(i)})
  build('stems_folder', base / 'songs', base / 'tfds')
  for i in range(2):
    write_song(base / 'mir' / 'train' / f'clip{i}', {'vocals': constant(-0.3, -0.3),
                                                     'accompaniment': constant(0.1, 0.1)})
  build('mir1k', base / 'mir', base / 'tfds')
  return base / 'tfds'


@pytest.fixture(scope='module')
def ramp_dir(tmp_path_factory) -> pathlib.Path:
  """`stems_folder` with train/ and validation/ songs whose vocals are distinct ramps (no value repeats)."""
  base = tmp_path_factory.mktemp('ramps')
  length = int(TRACK_SECONDS * RATE)
  for i, split in enumerate(('train', 'validation', 'validation')):
    ramp = (np.arange(length, dtype=np.float32) / length * 0.4 + 0.1 + i)[:, None] * np.float32([1.0, -1.0])
    stems = {'vocals': ramp / 4, 'accompaniment': -ramp / 8}
    if i == 2:
      stems['mixture'] = stems['vocals'] + stems['accompaniment'] + np.float32(0.01)
    write_song(base / 'songs' / split / f'ramp{i}', stems)
  build('stems_folder', base / 'songs', base / 'tfds')
  return base / 'tfds'


@pytest.fixture(scope='module')
def silence_dir(tmp_path_factory) -> pathlib.Path:
  """`stems_folder`: 10 tracks with loud vocals and 10 with digital silence, all of one length."""
  base = tmp_path_factory.mktemp('silence')
  rng = np.random.default_rng(0)
  for i in range(20):
    vocals = rng.uniform(-0.1, 0.1, (4096, 2)).astype(np.float32) if i % 2 else np.zeros((4096, 2), np.float32)
    write_song(base / 'songs' / f'song{i:02d}', {'vocals': vocals, 'accompaniment': constant(0.1, 0.1, 0.256)})
  build('stems_folder', base / 'songs', base / 'tfds')
  return base / 'tfds'


def make_config(data_dir: pathlib.Path, sources: str = 'stems_folder:1.0', **augmentations):
  overrides = [f"data.data_dir='{data_dir}'", f"data.sources='{sources}'", f'data.sample_rate={RATE}',
               f'data.segment={SEGMENT}', f'train.batch_size={BATCH}', 'data.read_threads=0']
  overrides += [f'data.augment.{name}={value}' for name, value in augmentations.items()]
  return load_config('cpu_tiny', overrides)


def take(iterator, count: int) -> list[dict[str, np.ndarray]]:
  return [next(iterator) for _ in range(count)]


def track_of_vocals(vocals: np.ndarray) -> int:
  return int(round((float(vocals[0, 0]) - 0.10) / 0.01))


def stems_of_accompaniment(accompaniment: np.ndarray) -> tuple[int, int]:
  """(bass track, drums track) of a marked accompaniment value."""
  value = float(accompaniment[0, 0])
  bass = int((value - 0.2 + 1e-4) // 0.02)
  return bass, int(round((value - 0.2 - 0.02 * bass) / 0.001)) - 1


# ------------------------------------------------------------------------------------------------ invariants

@pytest.mark.parametrize('enabled', [
    {}, {'remix_prob': 1.0}, {'remix_prob': 1.0, 'remix_stems_prob': 1.0}, {'gain_prob': 1.0},
    {'polarity_prob': 1.0}, {'swap_prob': 1.0}, {'pitch_prob': 1.0},
    {'remix_prob': 0.5, 'remix_stems_prob': 0.5, 'gain_prob': 1.0, 'polarity_prob': 0.5, 'swap_prob': 0.5,
     'pitch_prob': 0.5}])
def test_mixture_is_exactly_vocals_plus_accompaniment_after_every_operation(marked_dir, enabled):
  config = make_config(marked_dir, **{**OFF, **enabled})
  for batch in take(pipeline.train_iterator(config), 3):
    assert sorted(batch) == ['accompaniment', 'mixture', 'vocals']
    for value in batch.values():
      assert value.shape == (BATCH, SEGMENT, 2) and value.dtype == np.float32
    assert np.array_equal(batch['mixture'], batch['vocals'] + batch['accompaniment'])


def test_polarity_and_swap_act_on_all_stems_together(marked_dir):
  plain = next(pipeline.train_iterator(make_config(marked_dir, **OFF)))
  inverted = next(pipeline.train_iterator(make_config(marked_dir, **{**OFF, 'polarity_prob': 1.0})))
  swapped = next(pipeline.train_iterator(make_config(marked_dir, **{**OFF, 'swap_prob': 1.0})))
  for key in plain:
    np.testing.assert_array_equal(inverted[key], -plain[key])
    np.testing.assert_array_equal(swapped[key], plain[key][..., ::-1])
  rng = np.random.default_rng(0)
  stems = {'vocals': rng.normal(size=(16, 2)).astype(np.float32), 'bass': rng.normal(size=(16, 2)).astype(np.float32)}
  for _ in range(50):
    flipped = augment.invert_polarity(stems, rng, 0.5)
    assert all(np.array_equal(flipped[k], -stems[k]) for k in stems) or all(flipped[k] is stems[k] for k in stems)
    mirrored = augment.swap_channels(stems, rng, 0.5)
    assert (all(np.array_equal(mirrored[k], stems[k][:, ::-1]) for k in stems)
            or all(mirrored[k] is stems[k] for k in stems))


def test_random_gain_is_drawn_per_stem_within_range(marked_dir):
  plain = take(pipeline.train_iterator(make_config(marked_dir, **OFF)), 4)
  gained = take(pipeline.train_iterator(make_config(marked_dir, **{**OFF, 'gain_prob': 1.0, 'gain_db': 6.0})), 4)
  limit = 10 ** (6.0 / 20)
  vocal_gains, accompaniment_gains = [], []
  for before, after in zip(plain, gained, strict=True):
    for key, gains in (('vocals', vocal_gains), ('accompaniment', accompaniment_gains)):
      ratio = after[key] / before[key]
      assert np.allclose(ratio, ratio[:, :1, :1], rtol=1e-5)  # one gain per stem and example
      gains += list(ratio[:, 0, 0])
  gains = np.array(vocal_gains + accompaniment_gains)
  assert np.all((gains >= 1 / limit - 1e-6) & (gains <= limit + 1e-6))
  assert not np.allclose(vocal_gains, accompaniment_gains)


def test_stem_remix_takes_accompaniment_or_stems_from_other_tracks(marked_dir):
  def origins(**augmentations):
    batches = take(pipeline.train_iterator(make_config(marked_dir, **{**OFF, **augmentations})), 8)
    return [(track_of_vocals(v), *stems_of_accompaniment(a))
            for b in batches for v, a in zip(b['vocals'], b['accompaniment'], strict=True)]

  assert all(v == bass == drums for v, bass, drums in origins())
  whole = origins(remix_prob=1.0)
  assert all(bass == drums for _, bass, drums in whole)  # one donor's whole accompaniment
  assert sum(v != bass for v, bass, _ in whole) > len(whole) / 2  # expected 5/6 from another track
  by_stem = origins(remix_prob=1.0, remix_stems_prob=1.0)
  assert sum(bass != drums for _, bass, drums in by_stem) > len(by_stem) / 2  # each stem from its own track
  assert {bass for _, bass, _ in by_stem} == set(range(NUM_MARKED))


def test_pitch_shift_scales_frequency_and_keeps_length():
  length, semitones, hz = 4096, 2, 500.0
  read = augment.pitch_input_length(length, semitones)
  t = np.arange(read) / RATE
  sine = np.sin(2 * np.pi * hz * t).astype(np.float32)[:, None]
  shifted = augment.pitch_shift({'vocals': np.hstack([sine, sine]), 'accompaniment': sine}, semitones, length)
  assert {k: v.shape for k, v in shifted.items()} == {'vocals': (length, 2), 'accompaniment': (length, 1)}
  np.testing.assert_array_equal(shifted['vocals'][:, :1], shifted['accompaniment'])
  window = np.hanning(length)
  spectrum = np.abs(np.fft.rfft(shifted['accompaniment'][:, 0] * window))
  peak = np.argmax(spectrum) * RATE / length
  assert peak == pytest.approx(hz * 2 ** (semitones / 12), abs=RATE / length)
  # Output sample n is the input at (the kept offset) + n * ratio: phase-exact, the margins absorb the filter.
  ratio = 2 ** (semitones / 12)
  start = round(augment.PITCH_MARGIN / ratio) * ratio
  expected = np.sin(2 * np.pi * hz * (start + np.arange(length) * ratio) / RATE)
  np.testing.assert_allclose(shifted['accompaniment'][:, 0], expected, atol=2e-3)
  assert augment.pitch_shift(shifted, 0, length) is shifted


# ---------------------------------------------------------------------------------------------------- silence

def silent_share(config, count: int) -> int:
  examples = pipeline.crop_dataset(config, 'train', seed=1, augmented=False)
  return sum(augment.is_silent(examples[i]['vocals'], config.data.silence_threshold_db) for i in range(count))


def test_silent_crops_are_dropped_with_the_configured_probability(silence_dir):
  count, keep = 1200, 0.05
  config = make_config(silence_dir)
  assert config.data.silent_keep_prob == keep
  # Half the candidate crops are silent: kept silent crops make up keep / (1 + keep) of the output.
  expected = keep / (1 + keep)
  silent = silent_share(config, count)
  bound = 4.5 * np.sqrt(count * expected * (1 - expected))
  assert abs(silent - count * expected) <= bound, (silent, count * expected)
  dropped = 1 - silent / (count - silent)  # silent kept per loud crop = keep * (silent candidates / loud ones)
  assert 0.9 < dropped < 0.99
  everything = make_config(silence_dir)
  everything.data.silent_keep_prob = 1.0
  all_silent = silent_share(everything, 400)
  assert abs(all_silent - 200) <= 4.5 * np.sqrt(400 * 0.25)


# ------------------------------------------------------------------------------------ determinism and resuming

def test_same_seed_same_batches_and_exact_resume(marked_dir):
  config = make_config(marked_dir)  # the config's default augmentations
  config.data.read_threads = 2
  first = take(pipeline.train_iterator(config, seed=3), 4)
  again = take(pipeline.train_iterator(config, seed=3), 4)
  other = take(pipeline.train_iterator(config, seed=4), 4)
  for a, b, c in zip(first, again, other, strict=True):
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a['vocals'], c['vocals'])
  iterator = pipeline.train_iterator(config, seed=3)
  take(iterator, 2)
  state = iterator.get_state()
  expected = take(iterator, 2)
  resumed = pipeline.train_iterator(config, seed=3)
  resumed.set_state(state)
  for a, b in zip(take(resumed, 2), expected, strict=True):
    assert all(np.array_equal(a[k], b[k]) for k in a)
  for a, b in zip(expected, first[2:], strict=True):
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_hosts_get_disjoint_shards_that_make_up_the_global_batch(marked_dir):
  config = make_config(marked_dir)
  single = take(pipeline.train_iterator(config), 2)
  hosts = [take(pipeline.train_iterator(config, process_index=h, process_count=2), 2) for h in range(2)]
  for step, batch in enumerate(single):
    for host in range(2):
      assert hosts[host][step]['vocals'].shape == (BATCH // 2, SEGMENT, 2)
      for key in batch:
        np.testing.assert_array_equal(hosts[host][step][key], batch[key][host::2])
  rows = [tuple(np.round(r[:4].ravel(), 6)) for h in range(2) for b in hosts[h] for r in b['mixture']]
  assert len(set(rows[:2 * BATCH // 2])) + len(set(rows[2 * BATCH // 2:])) == len(set(rows))
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.train_iterator(config, process_count=3)


def test_sources_are_mixed_by_weight(marked_dir):
  config = make_config(marked_dir, sources='stems_folder:1.0,mir1k:0.5', **OFF)
  batches = take(pipeline.train_iterator(config), 6)
  from_mir1k = sum(int(v[0, 0] < 0) for b in batches for v in b['vocals'])
  assert from_mir1k == pytest.approx(6 * BATCH / 3, abs=1)
  with pytest.raises(ValueError, match='needs a known dataset'):
    pipeline.parse_sources('musdb18hq:1.0,nosuchset:1.0')


# --------------------------------------------------------------------------------------- evaluation and tracks

def test_eval_batches_are_fixed_unaugmented_crops_of_the_eval_split(ramp_dir):
  config = make_config(ramp_dir)  # augmentations on: evaluation must ignore them
  batches = pipeline.eval_batches(config, num_batches=2)
  assert len(batches) == 2
  for a, b in zip(batches, pipeline.eval_batches(config, num_batches=2), strict=True):
    assert all(np.array_equal(a[k], b[k]) for k in a)
  stored = PreparedDataset('stems_folder', 'validation', ramp_dir, RATE, 2)
  vocals = [stored.read_track(i, 'vocals') for i in range(len(stored.tracks))]
  for batch in batches:
    assert np.array_equal(batch['mixture'], batch['vocals'] + batch['accompaniment'])
    for crop in batch['vocals']:
      matches = [(t, int(s)) for t, track in enumerate(vocals) for s in np.flatnonzero(track[:, 0] == crop[0, 0])]
      assert any(np.array_equal(vocals[t][s:s + SEGMENT], crop) for t, s in matches)


def test_tracks_are_whole_and_use_the_stored_mixture(ramp_dir):
  config = make_config(ramp_dir)
  tracks = list(pipeline.tracks(config, 'stems_folder', 'validation'))
  assert [t.name for t in tracks] == ['ramp1', 'ramp2'] and all(t.sample_rate == RATE for t in tracks)
  stored = PreparedDataset('stems_folder', 'validation', ramp_dir, RATE, 2)
  np.testing.assert_array_equal(tracks[0].mixture, stored.read_track(0, 'vocals') + stored.read_track(
      0, 'accompaniment'))
  np.testing.assert_array_equal(tracks[1].mixture, stored.read_track(1, 'mixture'))
  assert tracks[1].vocals.shape == (int(TRACK_SECONDS * RATE), 2)


def test_prepared_dataset_pickles_for_worker_processes(ramp_dir):
  dataset = PreparedDataset('stems_folder', 'train+validation', ramp_dir, RATE, 2)
  copy = pickle.loads(pickle.dumps(dataset))
  assert [t.name for t in copy.tracks] == ['ramp0', 'ramp1', 'ramp2']
  np.testing.assert_array_equal(copy.read(2, 'vocals', 15900, 300), dataset.read(2, 'vocals', 15900, 300))
  edge = dataset.read(0, 'vocals', -10, 20)
  assert np.all(edge[:10] == 0) and np.array_equal(edge[10:], dataset.read(0, 'vocals', 0, 10))
