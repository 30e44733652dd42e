"""Audio I/O (`diffvox_jax.audio`) and chunking/overlap-add (`diffvox_jax.chunking`)."""

import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from diffvox_jax import audio

RATE = 44100


def sine(frequency: float, seconds: float = 0.5, rate: int = RATE, channels: int = 2, amplitude: float = 0.5):
  """A sine `(time, channels)` float32, channel c scaled by 1 - 0.25 c so channels differ."""
  t = np.arange(int(seconds * rate)) / rate
  wave = amplitude * np.sin(2 * np.pi * frequency * t)
  return (wave[:, None] * (1 - 0.25 * np.arange(channels))).astype(np.float32)


def peak_frequency(signal: np.ndarray, rate: int) -> float:
  """Frequency of the largest FFT bin of the first channel (Hann-windowed)."""
  channel = signal[:, 0] * np.hanning(len(signal))
  return float(np.fft.rfftfreq(len(channel), 1 / rate)[np.argmax(np.abs(np.fft.rfft(channel)))])


def assert_one_line_error(error: pytest.ExceptionInfo, path: pathlib.Path, fragment: str):
  message = str(error.value)
  assert message.startswith(str(path)), message
  assert '\n' not in message
  assert fragment in message, message


def ffmpeg_or_skip():
  if shutil.which('ffmpeg') is None or shutil.which('ffprobe') is None:
    pytest.skip('ffmpeg/ffprobe not on PATH')
  encoders = subprocess.run(['ffmpeg', '-hide_banner', '-encoders'], capture_output=True, text=True).stdout
  if ' aac ' not in encoders:
    pytest.skip('this ffmpeg has no AAC encoder')


def make_aac(path: pathlib.Path, frequencies: list[float], seconds: float = 0.5):
  """An mp4-family file with one stereo AAC stream per frequency (a sine each), made by ffmpeg."""
  inputs = [arg for f in frequencies for arg in ('-f', 'lavfi', '-i', f'sine=frequency={f}:duration={seconds}')]
  maps = [arg for i in range(len(frequencies)) for arg in ('-map', str(i))]
  subprocess.run(['ffmpeg', '-v', 'error', '-y', *inputs, *maps, '-c:a', 'aac', '-ac', '2', '-ar', str(RATE),
                  str(path)], check=True)


# --- reading and writing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('suffix, bits, subtype, step', [
    ('.wav', '16', 'PCM_16', 2.0**-15), ('.wav', '24', 'PCM_24', 2.0**-23), ('.wav', '32f', 'FLOAT', 0.0),
    ('.flac', '16', 'PCM_16', 2.0**-15), ('.flac', '24', 'PCM_24', 2.0**-23)])
def test_write_read_round_trip(tmp_path, suffix, bits, subtype, step):
  original = np.random.default_rng(0).uniform(-0.9, 0.9, (4000, 2)).astype(np.float32)
  path = tmp_path / f'x{suffix}'
  audio.write_audio(path, original, 22050, bits=bits)
  assert sf.info(str(path)).subtype == subtype
  decoded, rate = audio.read_audio(path)
  assert rate == 22050 and decoded.dtype == np.float32 and decoded.shape == original.shape
  np.testing.assert_allclose(decoded, original, rtol=0, atol=step)  # within one quantisation step


@pytest.mark.parametrize('file_format, subtype', [('OGG', 'VORBIS'), ('MP3', 'MPEG_LAYER_III')])
def test_read_lossy_formats(tmp_path, file_format, subtype):
  original = sine(1000.0, seconds=1.0)
  path = tmp_path / f'x.{file_format.lower()}'
  sf.write(str(path), original, RATE, format=file_format, subtype=subtype)
  decoded, rate = audio.read_audio(path)
  assert rate == RATE and decoded.dtype == np.float32 and decoded.shape[1] == 2
  assert abs(len(decoded) - len(original)) <= 2048
  assert abs(peak_frequency(decoded, RATE) - 1000.0) <= 1.0
  np.testing.assert_allclose(audio.rms_db(decoded, axis=0), audio.rms_db(original, axis=0), atol=0.5)


def test_read_through_ffmpeg_fallback(tmp_path):
  ffmpeg_or_skip()
  path = tmp_path / 'x.m4a'
  make_aac(path, [660.0])
  decoded, rate = audio.read_audio(path)
  assert rate == RATE and decoded.shape[1] == 2 and decoded.dtype == np.float32
  assert abs(len(decoded) - RATE // 2) <= 2048
  assert abs(peak_frequency(decoded, RATE) - 660.0) <= 2.0


def test_read_stems(tmp_path):
  ffmpeg_or_skip()
  frequencies = [220.0, 330.0, 440.0, 550.0, 880.0]
  path = tmp_path / 'song.stem.mp4'
  make_aac(path, frequencies)
  stems, rate = audio.read_stems(path)
  assert rate == RATE and list(stems) == list(audio.STEM_NAMES)
  assert len({stem.shape for stem in stems.values()}) == 1
  for frequency, stem in zip(frequencies, stems.values(), strict=True):
    assert stem.dtype == np.float32 and stem.shape[1] == 2
    assert abs(peak_frequency(stem, RATE) - frequency) <= 2.0
  mixture, _ = audio.read_audio(path)  # a plain read gives the first stream
  np.testing.assert_array_equal(mixture[:len(stems['mixture'])], stems['mixture'])


def test_read_stems_errors(tmp_path):
  ffmpeg_or_skip()
  single = tmp_path / 'one.stem.mp4'
  make_aac(single, [440.0])
  with pytest.raises(audio.AudioError) as error:
    audio.read_stems(single)
  assert_one_line_error(error, single, '1 audio streams')
  garbage = tmp_path / 'bad.stem.mp4'
  garbage.write_bytes(b'not an mp4 at all' * 50)
  with pytest.raises(audio.AudioError) as error:
    audio.read_stems(garbage)
  assert_one_line_error(error, garbage, 'ffprobe:')


def test_write_clip_modes(tmp_path):
  loud = np.array([[0.5, -2.0], [1.5, 0.25]], np.float32)
  paths = {mode: tmp_path / f'{mode}.wav' for mode in ('rescale', 'clamp', 'float')}
  audio.write_audio(paths['rescale'], loud, RATE, bits='24', clip='rescale')
  audio.write_audio(paths['clamp'], loud, RATE, bits='24', clip='clamp')
  audio.write_audio(paths['float'], loud, RATE, bits='32f', clip='clamp')  # float wav holds any value.
  np.testing.assert_allclose(audio.read_audio(paths['rescale'])[0], loud / 2.0, atol=2.0**-23)
  np.testing.assert_allclose(audio.read_audio(paths['clamp'])[0], [[0.5, -1.0], [1.0, 0.25]], atol=2.0**-23)
  np.testing.assert_array_equal(audio.read_audio(paths['float'])[0], loud)
  quiet_path = tmp_path / 'q.wav'
  audio.write_audio(quiet_path, loud / 4, RATE, bits='24', clip='rescale')  # peak <= 1: untouched
  np.testing.assert_allclose(audio.read_audio(quiet_path)[0], loud / 4, atol=2.0**-23)


def test_writer_counts_clamped_samples_writes_mp3_and_removes_stale_temps(tmp_path):
  path = tmp_path / 'v.mp3'
  stale = [tmp_path / '.v.mp3.0123456789ab.tmp', tmp_path / '.v.mp3.ba9876543210.float.tmp']
  unrelated = tmp_path / '.other.mp3.0123456789ab.tmp'
  for leftover in [*stale, unrelated]:
    leftover.write_bytes(b'killed mid-write')
  signal = sine(440.0, amplitude=1.25)
  with audio.AudioWriter(path, RATE, 2, clip='clamp', mp3_kbps=128) as writer:
    writer.write(signal)
    writer.commit()
  assert writer.clamped == int(np.count_nonzero(np.abs(signal) > 1.0)) > 0
  decoded, rate = audio.read_audio(path)
  assert rate == RATE and decoded.shape == signal.shape  # libsndfile's mp3 keeps the exact length.
  assert np.corrcoef(decoded[:, 0], np.clip(signal[:, 0], -1, 1))[0, 1] > 0.99
  assert sorted(p.name for p in tmp_path.iterdir()) == ['.other.mp3.0123456789ab.tmp', 'v.mp3']
  with pytest.raises(ValueError, match=r'v.mp3: mp3 holds audio at .* Hz only, not 96000 Hz'):
    audio.AudioWriter(path, 96000, 2)
  with pytest.raises(ValueError, match='bitrate must be one of'):
    audio.AudioWriter(path, RATE, 2, mp3_kbps=100)


def test_write_mono_vector(tmp_path):
  path = tmp_path / 'm.flac'
  audio.write_audio(path, np.full(100, 0.25, np.float32), 8000)
  decoded, rate = audio.read_audio(path)
  assert rate == 8000 and decoded.shape == (100, 1)
  np.testing.assert_allclose(decoded, 0.25, atol=2.0**-15)


@pytest.mark.parametrize('name, kwargs, fragment', [
    ('x.flac', {'bits': '32f'}, 'FLAC stores integers'),
    ('x.ogg', {}, "cannot write '.ogg'"),
    ('x.wav', {'bits': '8'}, 'bits must be'),
    ('x.wav', {'clip': 'wrap'}, 'clip must be'),
])
def test_write_rejects_bad_arguments(tmp_path, name, kwargs, fragment):
  with pytest.raises(ValueError, match=fragment):
    audio.write_audio(tmp_path / name, np.zeros((10, 2), np.float32), RATE, **kwargs)
  assert not list(tmp_path.iterdir())


def test_write_rejects_nan(tmp_path):
  with pytest.raises(ValueError, match='NaN or Inf'):
    audio.write_audio(tmp_path / 'x.wav', np.array([[0.0], [np.nan]], np.float32), RATE)


def test_write_is_atomic(tmp_path, monkeypatch):
  path = tmp_path / 'out.wav'
  audio.write_audio(path, sine(440.0), RATE)
  assert [p.name for p in tmp_path.iterdir()] == ['out.wav']
  before = path.read_bytes()

  def failing_write(self, data):
    assert pathlib.Path(self.name).exists() and self.name != str(path)  # a temp file is open at this point
    raise OSError('disk full')

  monkeypatch.setattr(audio.sf.SoundFile, 'write', failing_write)
  with pytest.raises(OSError, match='disk full'):
    audio.write_audio(path, sine(880.0), RATE)
  assert path.read_bytes() == before
  assert [p.name for p in tmp_path.iterdir()] == ['out.wav']


def test_audio_writer_streams_blocks(tmp_path):
  signal = sine(440.0) * 2.5  # peak 1.25: clamped
  streamed, whole = tmp_path / 'streamed.flac', tmp_path / 'whole.flac'
  with audio.AudioWriter(streamed, RATE, 2, bits='24', clip='clamp') as writer:
    for block in np.array_split(signal, 7):
      writer.write(block)
    writer.commit()
  audio.write_audio(whole, signal, RATE, bits='24', clip='clamp')
  np.testing.assert_array_equal(audio.read_audio(streamed)[0], audio.read_audio(whole)[0])
  np.testing.assert_allclose(audio.read_audio(streamed)[0], np.clip(signal, -1, 1), atol=2.0**-23)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['streamed.flac', 'whole.flac']


def test_audio_writer_failure_keeps_destination(tmp_path):
  path = tmp_path / 'out.wav'
  audio.write_audio(path, sine(440.0), RATE)
  before = path.read_bytes()
  with pytest.raises(ValueError, match=r'expected blocks of shape \(time, 2\)'), \
      audio.AudioWriter(path, RATE, 2) as writer:
    writer.write(sine(880.0))
    writer.write(sine(880.0, channels=1))
    writer.commit()
  assert path.read_bytes() == before
  assert [p.name for p in tmp_path.iterdir()] == ['out.wav']


# --- bad input ---------------------------------------------------------------------------------------------------

def truncated(tmp_path: pathlib.Path, name: str, **write_kwargs) -> pathlib.Path:
  """A file of 1 s of noise, cut to half its bytes."""
  path = tmp_path / name
  sf.write(str(path), np.random.default_rng(1).uniform(-0.5, 0.5, (RATE, 2)), RATE, **write_kwargs)
  content = path.read_bytes()
  path.write_bytes(content[:len(content) // 2])
  return path


def test_missing_file(tmp_path):
  path = tmp_path / 'nothing.wav'
  for read in (audio.read_audio, audio.read_stems, lambda p: audio.audio_length(p, RATE)):
    with pytest.raises(audio.AudioError) as error:
      read(path)
    assert_one_line_error(error, path, 'no such file')


def test_garbage_bytes(tmp_path):
  path = tmp_path / 'garbage.wav'
  path.write_bytes(np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes())
  with pytest.raises(audio.AudioError) as error:
    audio.read_audio(path)
  assert_one_line_error(error, path, 'unreadable (soundfile: Format not recognised')


@pytest.mark.parametrize('name, write_kwargs, fragment', [
    ('cut.wav', {'subtype': 'PCM_16'}, 'truncated file (header declares'),
    ('cut.flac', {'subtype': 'PCM_16'}, 'undecodable, truncated or corrupt'),
    ('cut.mp3', {'format': 'MP3'}, 'truncated file ('),
])
def test_truncated_file(tmp_path, name, write_kwargs, fragment):
  path = truncated(tmp_path, name, **write_kwargs)
  with pytest.raises(audio.AudioError) as error:
    audio.read_audio(path)
  assert_one_line_error(error, path, fragment)
  plan = audio.chunk_plan(RATE, 8192, 0.2)
  with pytest.raises(audio.AudioError) as error:
    list(audio.iter_chunks(path, RATE, 2, plan))
  assert_one_line_error(error, path, '')


def test_zero_length(tmp_path):
  path = tmp_path / 'empty.wav'
  sf.write(str(path), np.zeros((0, 2), np.float32), RATE)
  for read in (audio.read_audio, lambda p: audio.audio_length(p, RATE)):
    with pytest.raises(audio.AudioError) as error:
      read(path)
    assert_one_line_error(error, path, 'no audio samples')


@pytest.mark.parametrize('bad_value', [np.nan, np.inf])
def test_non_finite_samples(tmp_path, bad_value):
  samples = sine(440.0)
  samples[1000, 1] = bad_value
  path = tmp_path / 'bad.wav'
  sf.write(str(path), samples, RATE, subtype='FLOAT')
  with pytest.raises(audio.AudioError) as error:
    audio.read_audio(path)
  assert_one_line_error(error, path, 'NaN or Inf')
  with pytest.raises(audio.AudioError) as error:
    list(audio.iter_chunks(path, RATE, 2, audio.chunk_plan(len(samples), 4096, 0.2), block=512))
  assert_one_line_error(error, path, 'NaN or Inf')


# --- resampling and channels -------------------------------------------------------------------------------------

@pytest.mark.parametrize('rate_out', [16000, 22050, 48000])
def test_resample_preserves_sine(rate_out):
  original = sine(1000.0, seconds=1.0)
  converted = audio.resample(original, RATE, rate_out)
  assert converted.dtype == np.float32 and converted.shape == (rate_out, 2)
  assert abs(peak_frequency(converted, rate_out) - 1000.0) <= 1.0
  middle = slice(rate_out // 10, -rate_out // 10)  # away from the filter's edge transients
  np.testing.assert_allclose(audio.rms_db(converted[middle], axis=0), audio.rms_db(original, axis=0), atol=0.01)


def test_resample_same_rate_is_identity():
  original = sine(440.0)
  np.testing.assert_array_equal(audio.resample(original, RATE, RATE), original)


def test_convert_channels():
  stereo = np.array([[1.0, 3.0], [-2.0, 0.0]], np.float32)
  np.testing.assert_array_equal(audio.convert_channels(stereo, 1), [[2.0], [-1.0]])
  np.testing.assert_array_equal(audio.convert_channels(stereo[:, :1], 2), [[1.0, 1.0], [-2.0, -2.0]])
  np.testing.assert_array_equal(audio.convert_channels(stereo, 2), stereo)
  six = np.arange(12, dtype=np.float32).reshape(2, 6)
  np.testing.assert_array_equal(audio.convert_channels(six, 1), [[2.5], [8.5]])
  with pytest.raises(ValueError, match='without the channel layout'):
    audio.convert_channels(six, 2)


def test_load_audio_converts_rate_and_channels(tmp_path):
  path = tmp_path / 'mono16k.flac'
  sf.write(str(path), sine(500.0, rate=16000, channels=1), 16000, subtype='PCM_24')
  loaded = audio.load_audio(path, RATE, 2)
  assert loaded.shape == (RATE // 2, 2) and loaded.dtype == np.float32
  np.testing.assert_array_equal(loaded[:, 0], loaded[:, 1])
  assert abs(peak_frequency(loaded, RATE) - 500.0) <= 2.0
  assert audio.audio_length(path, RATE) == len(loaded)
  surround = tmp_path / 'surround.wav'
  sf.write(str(surround), np.zeros((100, 6), np.float32), RATE)
  with pytest.raises(audio.AudioError) as error:
    audio.load_audio(surround, RATE, 2)
  assert_one_line_error(error, surround, 'cannot convert 6 channels to 2')


def test_levels():
  assert audio.rms_db(sine(1000.0, seconds=1.0, channels=1, amplitude=1.0)) == pytest.approx(-3.0103, abs=1e-3)
  assert audio.rms_db(np.zeros((10, 2))) == -np.inf
  assert audio.db_to_gain(-20.0) == pytest.approx(0.1)
  assert audio.db_to_gain(audio.rms_db(np.full((5, 1), 0.25))) == pytest.approx(0.25)


# --- chunking and overlap-add ------------------------------------------------------------------------------------

def test_chunk_plan():
  plan = audio.chunk_plan(10, 4, 0.5)
  assert (plan.overlap, plan.hop, plan.num_chunks, plan.padded_length) == (2, 2, 4, 10)
  np.testing.assert_array_equal(plan.starts, [0, 2, 4, 6])
  short = audio.chunk_plan(3, 128, 0.2)
  assert (short.num_chunks, short.overlap, short.padded_length) == (1, 26, 128)
  paper = audio.chunk_plan(44100 * 12, 131072, 0.2)  # 12 s at the paper's chunking
  assert paper.overlap == 26214 and paper.num_chunks == 5 and paper.padded_length >= 44100 * 12
  for bad in [(0, 4, 0.2), (10, 0, 0.2), (10, 4, 1.0), (10, 4, -0.1)]:
    with pytest.raises(ValueError):
      audio.chunk_plan(*bad)


def test_cut_chunks_matches_slicing():
  signal = np.random.default_rng(3).standard_normal((300, 2)).astype(np.float32)
  plan = audio.chunk_plan(len(signal), 64, 0.25)
  padded = np.concatenate([signal, np.zeros((plan.padded_length - len(signal), 2), np.float32)])
  expected = np.stack([padded[start:start + 64] for start in plan.starts])
  np.testing.assert_array_equal(audio.cut_chunks(signal, plan), expected)
  assert plan.starts[-1] + 64 > len(signal) > plan.starts[-2] + 64  # the last chunk really is padded


@pytest.mark.parametrize('overlap', [0.0, 0.2, 0.5, 0.75])
@pytest.mark.parametrize('length', [1, 50, 127, 128, 129, 1000, 1001])
def test_overlap_add_identity(length, overlap):
  signal = np.random.default_rng(length).standard_normal((length, 2)).astype(np.float32)
  plan = audio.chunk_plan(length, 128, overlap)
  np.testing.assert_array_equal(audio.overlap_add(audio.cut_chunks(signal, plan), plan), signal)


@pytest.mark.parametrize('overlap', [0.2, 0.5])
def test_windows_fade_between_chunks_only(overlap):
  plan = audio.chunk_plan(1000, 100, overlap)
  windows = [audio.chunk_window(plan, i) for i in range(plan.num_chunks)]
  assert windows[0][0] == 1.0 and windows[-1][-1] == 1.0  # track edges are not faded
  assert windows[0][-1] < 0.01 and windows[1][0] < 0.01  # inner edges are
  envelope = np.zeros(plan.padded_length)
  for start, window in zip(plan.starts, windows, strict=True):
    envelope[start:start + plan.chunk] += window
  np.testing.assert_allclose(envelope, 1.0, atol=1e-12)  # complementary tapers


def test_overlap_add_cross_fades():
  plan = audio.chunk_plan(260, 100, 0.2)
  assert plan.num_chunks == 3 and plan.overlap == 20
  levels = np.array([1.0, 3.0, -1.0])
  chunks = levels[:, None, None] * np.ones((3, 100, 1), np.float32)
  track = audio.overlap_add(chunks, plan)[:, 0]
  rise = np.sin(np.pi * (np.arange(20) + 0.5) / 40) ** 2  # the documented Hann-shaped taper
  np.testing.assert_allclose(track[:80], 1.0)
  np.testing.assert_allclose(track[80:100], 1.0 * (1 - rise) + 3.0 * rise, rtol=1e-6)
  np.testing.assert_allclose(track[100:160], 3.0)
  np.testing.assert_allclose(track[160:180], 3.0 * (1 - rise) - 1.0 * rise, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(track[180:], -1.0)


def test_overlap_add_matches_float64_reference():
  rng = np.random.default_rng(4)
  plan = audio.chunk_plan(777, 128, 0.5)
  chunks = rng.standard_normal((plan.num_chunks, 128, 2)).astype(np.float32)
  weighted, envelope = np.zeros((plan.padded_length, 2)), np.zeros(plan.padded_length)
  for index, start in enumerate(plan.starts):
    window = audio.chunk_window(plan, index)
    weighted[start:start + 128] += window[:, None] * chunks[index].astype(np.float64)
    envelope[start:start + 128] += window
  expected = (weighted / envelope[:, None])[:plan.length]
  np.testing.assert_allclose(audio.overlap_add(chunks, plan), expected, rtol=1e-6, atol=1e-7)


def test_streaming_overlap_add():
  rng = np.random.default_rng(5)
  plan = audio.chunk_plan(1000, 128, 0.2)
  chunks = rng.standard_normal((plan.num_chunks, 128, 2)).astype(np.float32)
  accumulator = audio.OverlapAdd(plan, 2)
  pieces = []
  for index, chunk in enumerate(chunks):
    pieces.append(accumulator.add(chunk))
    final = plan.length if index == plan.num_chunks - 1 else plan.starts[index + 1]
    assert sum(map(len, pieces)) == final  # everything no later chunk touches, and nothing more
  assert accumulator.finished
  np.testing.assert_array_equal(np.concatenate(pieces), audio.overlap_add(chunks, plan))
  with pytest.raises(ValueError, match='already added'):
    accumulator.add(chunks[0])


def test_streaming_cutter_with_uneven_blocks():
  signal = np.random.default_rng(6).standard_normal((1000, 2)).astype(np.float32)
  plan = audio.chunk_plan(len(signal), 128, 0.2)
  cutter = audio.ChunkCutter(plan, 2)
  chunks = []
  for block in np.split(signal, [7, 8, 300, 301, 650]):
    chunks.extend(cutter.push(block))
  chunks.extend(cutter.finish())
  np.testing.assert_array_equal(np.stack(chunks), audio.cut_chunks(signal, plan))
  with pytest.raises(ValueError, match='received 1001 samples'):
    list(audio.ChunkCutter(plan, 2).push(np.zeros((1001, 2))))


@pytest.mark.parametrize('name, file_rate, file_channels, subtype', [
    ('native.wav', RATE, 2, 'FLOAT'), ('mono16k.flac', 16000, 1, 'PCM_24'), ('r48k.wav', 48000, 2, 'PCM_16')])
def test_iter_chunks_matches_full_read(tmp_path, name, file_rate, file_channels, subtype):
  path = tmp_path / name
  signal = np.random.default_rng(7).uniform(-0.5, 0.5, (int(1.3 * file_rate), file_channels))
  sf.write(str(path), signal, file_rate, subtype=subtype)
  plan = audio.chunk_plan(audio.audio_length(path, RATE), 8192, 0.2)
  streamed = np.stack(list(audio.iter_chunks(path, RATE, 2, plan, block=3000)))
  expected = audio.cut_chunks(audio.load_audio(path, RATE, 2), plan)
  assert streamed.shape == expected.shape == (plan.num_chunks, 8192, 2)
  np.testing.assert_allclose(streamed, expected, rtol=0, atol=1e-6)


def test_iter_chunks_ffmpeg_fallback(tmp_path):
  ffmpeg_or_skip()
  path = tmp_path / 'x.m4a'
  make_aac(path, [330.0])
  plan = audio.chunk_plan(audio.audio_length(path, 16000), 2048, 0.2)
  streamed = np.stack(list(audio.iter_chunks(path, 16000, 1, plan)))
  np.testing.assert_array_equal(streamed, audio.cut_chunks(audio.load_audio(path, 16000, 1), plan))


def test_iter_chunks_rejects_a_plan_for_another_length(tmp_path):
  path = tmp_path / 'x.wav'
  sf.write(str(path), sine(440.0), RATE)
  with pytest.raises(audio.AudioError) as error:
    list(audio.iter_chunks(path, RATE, 2, audio.chunk_plan(RATE, 4096, 0.2)))
  assert_one_line_error(error, path, f'plan expects {RATE}')


# --- real audio --------------------------------------------------------------------------------------------------

def test_reads_musdb_sample(shared_data):
  folder = shared_data / 'musdb_sample' / 'Music Delta - 80s Rock'
  stems = {}
  for name in audio.STEM_NAMES:
    stems[name], rate = audio.read_audio(folder / f'{name}.flac')
    assert rate == RATE and stems[name].shape[1] == 2 and stems[name].dtype == np.float32
    assert abs(len(stems[name]) / RATE - 7.0) < 0.5
  accompaniment_and_vocals = sum(stems[name] for name in audio.STEM_NAMES[1:])
  assert audio.rms_db(stems['mixture'] - accompaniment_and_vocals) < audio.rms_db(stems['mixture']) - 25.0
  plan = audio.chunk_plan(audio.audio_length(folder / 'vocals.flac', 16000), 16384, 0.2)
  streamed = np.stack(list(audio.iter_chunks(folder / 'vocals.flac', 16000, 1, plan)))
  np.testing.assert_allclose(audio.overlap_add(streamed, plan), audio.load_audio(folder / 'vocals.flac', 16000, 1),
                             atol=1e-6)
