"""Synthetic songs: sung where notes are written, silent in rests, at the written pitch, deterministic."""

import numpy as np
import pytest
from music21 import midi as m21midi

from diffvox_jax.data import synthetic, synthetic_voice

RATE = 22050
PYIN_HOP = 512


@pytest.fixture(scope='module')
def song() -> synthetic.SyntheticSong:
  try:
    synthetic.check_tools()
  except synthetic.MissingToolError as error:
    pytest.skip(str(error))
  return synthetic.render_song(3, sample_rate=RATE)


def _spans(intervals, margin_start, margin_end):
  """Sample index ranges of (start_s, end_s) intervals shrunk by the margins, dropping those left empty."""
  out = []
  for start, end in intervals:
    a, b = round((start + margin_start) * RATE), round((end - margin_end) * RATE)
    if b > a:
      out.append((a, b))
  return out


def _rests(song):
  """Gaps between sung notes, before the first and after the last, in seconds."""
  bounds = [0.0] + [t for note in song.notes for t in (note.start_s, note.end_s)] + [len(song.stems['vocals']) / RATE]
  return [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds), 2) if bounds[i + 1] > bounds[i]]


def test_stems_shapes_rates_and_finite(song):
  assert song.sample_rate == RATE
  assert set(song.stems) == set(synthetic.STEM_NAMES)
  length = len(song.stems['vocals'])
  assert synthetic.EXCERPT_SECONDS[0] * RATE <= length <= (synthetic.EXCERPT_SECONDS[1] + synthetic.TAIL_S) * RATE
  for name, stem in song.stems.items():
    assert stem.shape == (length, 2) and stem.dtype == np.float32, name
    assert np.isfinite(stem).all(), name
    assert np.sqrt(np.mean(stem.astype(np.float64) ** 2)) > 1e-3, f'{name} is silent'
  assert np.max(np.abs(sum(song.stems.values()))) < 1.0
  low, high = synthetic_voice.SUNG_PITCH_RANGE
  assert song.notes and all(low <= n.midi_pitch <= high and 0 <= n.start_s < n.end_s for n in song.notes)
  assert all(a.end_s <= b.start_s + 1e-9 for a, b in zip(song.notes[:-1], song.notes[1:], strict=True))


@pytest.fixture(scope='module')
def vocal_pitch(song) -> tuple[np.ndarray, np.ndarray]:
  """librosa.pyin over the whole vocals stem: (f0 in Hz per frame, voiced flag per frame), hop PYIN_HOP."""
  librosa = pytest.importorskip('librosa')
  f0, voiced, _ = librosa.pyin(song.stems['vocals'].mean(axis=1), fmin=70, fmax=600, sr=RATE, frame_length=2048,
                               hop_length=PYIN_HOP)
  return f0, voiced


def test_every_note_voiced_at_its_written_pitch(song, vocal_pitch):
  f0, voiced = vocal_pitch
  checked = 0
  for note in song.notes:
    first, last = int(np.ceil((note.start_s + 0.05) * RATE / PYIN_HOP)), int((note.end_s - 0.05) * RATE / PYIN_HOP)
    if last - first < 2:
      continue
    assert voiced[first:last].mean() > 0.75, note
    sung = 12 * np.log2(np.median(f0[first:last][voiced[first:last]]) / 440.0) + 69
    assert abs(sung - note.midi_pitch) < 0.5, (note, sung)
    checked += 1
  assert checked >= 0.8 * len(song.notes)


def test_phrases_start_at_their_written_onset(song, vocal_pitch):
  _, voiced = vocal_pitch
  for phrase in synthetic_voice.split_phrases(song.notes):
    search_from = max(int((phrase[0].start_s - 0.2) * RATE / PYIN_HOP), 0)
    first_voiced_s = (search_from + np.argmax(voiced[search_from:])) * PYIN_HOP / RATE
    assert abs(first_voiced_s - phrase[0].start_s) < 0.08, phrase[0]


def test_vocals_silent_in_rests(song, vocal_pitch):
  vocals = song.stems['vocals'].astype(np.float64).mean(axis=1)
  _, voiced = vocal_pitch
  # Rests: from the end of a phrase's release (RELEASE_S) to the next onset.
  rest_spans = _spans(_rests(song), synthetic_voice.RELEASE_S + 0.01, 0.0)
  rest_samples = np.concatenate([vocals[a:b] for a, b in rest_spans])
  assert len(rest_samples) > 0.3 * RATE, 'the song should hold rests to test'
  note_spans = _spans([(n.start_s, n.end_s) for n in song.notes], 0.05, 0.05)
  note_rms = np.sqrt(np.mean(np.concatenate([vocals[a:b] for a, b in note_spans]) ** 2))
  assert np.sqrt(np.mean(rest_samples ** 2)) < note_rms * 10 ** (-60 / 20)
  rest_frames = np.concatenate([np.arange(a // PYIN_HOP + 4, b // PYIN_HOP - 4) for a, b in rest_spans])
  assert rest_frames.size and not voiced[rest_frames].any()


def test_levels_match_drawn_ratio_and_peak(song):
  metadata = song.metadata
  stems = {k: v.astype(np.float64) for k, v in song.stems.items()}
  accompaniment = stems['drums'] + stems['bass'] + stems['other']
  sung = np.concatenate([np.arange(round(n.start_s * RATE), round(n.end_s * RATE)) for n in song.notes])
  ratio_db = 20 * np.log10(np.sqrt(np.mean(stems['vocals'][sung] ** 2)) / np.sqrt(np.mean(accompaniment[sung] ** 2)))
  assert ratio_db == pytest.approx(metadata['vocal_to_accompaniment_db'], abs=0.05)
  assert synthetic.VOCAL_TO_ACCOMPANIMENT_DB[0] <= ratio_db <= synthetic.VOCAL_TO_ACCOMPANIMENT_DB[1]
  peak_dbfs = 20 * np.log10(np.max(np.abs(accompaniment + stems['vocals'])))
  assert peak_dbfs == pytest.approx(metadata['mixture_peak_dbfs'], abs=0.05)


def test_same_seed_same_arrays_other_seed_other_song(song):
  del song  # only for the tool check
  first = synthetic.render_song(5, sample_rate=16000, max_seconds=6)
  again = synthetic.render_song(5, sample_rate=16000, max_seconds=6)
  other = synthetic.render_song(6, sample_rate=16000, max_seconds=6)
  assert first.name == again.name and first.notes == again.notes
  for name in synthetic.STEM_NAMES:
    assert first.stems[name].shape == (6 * 16000, 2)
    np.testing.assert_array_equal(first.stems[name], again.stems[name])
    assert not np.array_equal(first.stems[name], other.stems[name])
  assert first.name != other.name or first.notes != other.notes


def test_missing_tools_name_their_debian_package(monkeypatch, tmp_path):
  monkeypatch.setenv('PATH', str(tmp_path))
  with pytest.raises(synthetic.MissingToolError, match=r'festival.*Debian package festival\b'):
    synthetic.check_tools()
  with pytest.raises(synthetic.MissingToolError, match=r'fluidsynth.*Debian package fluidsynth\b'):
    synthetic.render_song(0)


def test_missing_soundfont_names_its_package(monkeypatch, tmp_path):
  monkeypatch.setattr(synthetic, 'SOUNDFONT', tmp_path / 'absent.sf2')
  with pytest.raises(synthetic.MissingToolError, match='fluid-soundfont-gm'):
    synthetic.check_tools()


@pytest.mark.parametrize('value, encoded', [(0, b'\x00'), (0x7F, b'\x7f'), (0x80, b'\x81\x00'),
                                            (0x3FFF, b'\xff\x7f'), (0x4000, b'\x81\x80\x00'),
                                            (0x0FFFFFFF, b'\xff\xff\xff\x7f')])
def test_variable_length_quantity_matches_smf_spec(value, encoded):
  assert synthetic._vlq(value) == encoded  # pylint: disable=protected-access


def test_midi_file_reads_back_with_music21():
  notes = [synthetic.TimedNote(0.0, 0.5, 60, 100), synthetic.TimedNote(0.5, 1.25, 64, 90)]
  data = synthetic.midi_file({3: (40, -1.0, notes), 9: (25, 0.0, [synthetic.TimedNote(1.0, 1.1, 36, 80)])}, 2.0)
  reader = m21midi.MidiFile()
  reader.readstr(data)
  assert reader.ticksPerQuarterNote == synthetic.MIDI_TICKS_PER_QUARTER and len(reader.tracks) == 1
  now, seen = 0, []
  for event in reader.tracks[0].events:
    if isinstance(event, m21midi.DeltaTime):
      now += event.time
    elif event.type == m21midi.ChannelVoiceMessages.NOTE_ON:
      seen.append((now / 960, event.channel, event.pitch, event.velocity))
    elif event.type == m21midi.ChannelVoiceMessages.PROGRAM_CHANGE:
      seen.append(('program', event.channel, event.data))
    elif event.type == m21midi.ChannelVoiceMessages.CONTROLLER_CHANGE and event.parameter1 == 10:
      seen.append(('pan', event.channel, event.parameter2))
  assert ('program', 4, 40) in seen and ('program', 10, 25) in seen  # music21 channels are 1-based
  assert ('pan', 4, 1) in seen and ('pan', 10, 64) in seen
  assert [s for s in seen if isinstance(s[0], float)] == [(0.0, 4, 60, 100), (0.5, 4, 64, 90), (1.0, 10, 36, 80)]
  assert now == 2.0 * 960  # the end-of-track event sits at end_s


def test_phrases_split_at_gaps_and_xml_gives_frequencies():
  notes = [synthetic_voice.SungNote(0.0, 0.5, 57), synthetic_voice.SungNote(0.5, 1.0, 69),
           synthetic_voice.SungNote(1.2, 1.5, 45)]
  phrases = synthetic_voice.split_phrases(notes)
  assert phrases == [notes[:2], notes[2:]]
  xml = synthetic_voice.phrase_xml(phrases[0], ['la', 'lo'])
  assert 'FREQ="220.000">la<' in xml and 'FREQ="440.000">lo<' in xml and xml.count('SECONDS="0.5000"') == 2


@pytest.mark.parametrize('singer', synthetic_voice.SINGERS, ids=lambda singer: singer.voice)
def test_every_singer_sings_its_syllables_on_time_at_the_written_pitch(singer, tmp_path):
  if not singer.path.exists():
    pytest.skip(f'Festival voice {singer.voice} not installed (Debian package {singer.package})')
  librosa = pytest.importorskip('librosa')
  low, high = synthetic_voice.SUNG_PITCH_RANGE
  pitches = [low, (low + high) // 2, high, low + 5, high - 3] * (len(singer.syllables) // 5 + 1)
  notes = [synthetic_voice.SungNote(0.5 + 0.4 * i, 0.9 + 0.4 * i, pitch)
           for i, pitch in enumerate(pitches[:len(singer.syllables)])]
  rate, hop = 16000, 256
  vocals = synthetic_voice.sing(notes, singer.syllables, singer, round((notes[-1].end_s + 0.5) * rate), rate,
                                tmp_path)
  f0, voiced, _ = librosa.pyin(vocals.astype(np.float64), fmin=70, fmax=600, sr=rate, frame_length=1024,
                               hop_length=hop)
  assert not voiced[:int(0.4 * rate / hop)].any()
  for note, syllable in zip(notes, singer.syllables, strict=True):
    first, last = int((note.start_s + 0.1) * rate / hop), int((note.end_s - 0.1) * rate / hop)
    assert voiced[first:last].mean() > 0.5, (syllable, note)
    sung = 12 * np.log2(np.median(f0[first:last][voiced[first:last]]) / 440.0) + 69
    assert abs(sung - note.midi_pitch) < 0.5, (syllable, note, sung)
