"""Synthetic multitrack songs, the project's embedded default dataset: no downloads, unlimited, deterministic.

A song is an excerpt (20-35 s by default) of one of music21's Bach chorales (`corpus.chorales.Iterator()`, shipped
with music21), arranged at random from the seed:
- the soprano is SUNG by Festival's singing mode on one-syllable words (`synthetic_voice.py`) by one of three
  singers drawn per song (two men, one woman), an octave down (Festival's voices follow the target pitch only up
  to MIDI 70); phrases end at the fermatas with a breath, and about one phrase in five is left to an instrument
  (the vocals are silent there);
- alto and tenor ("other"), the bass ("bass") and a drum groove built on the chorale's bars ("drums") are
  rendered by FluidSynth with the FluidR3 General MIDI soundfont from small MIDI files written here;
- tempo, key (transposition), GM programs, drum kit and groove, panning, articulation and levels are drawn from
  the seed; the vocal-to-accompaniment ratio is drawn in [-6, +3] dB.

Same seed, same arrays: FluidSynth runs with reverb and chorus off and writes float samples (no dither), Festival
is deterministic, and every random choice comes from `np.random.default_rng(seed)`. Intermediate files live in a
temporary folder that is removed afterwards.

Known limits: the vocals carry nothing above 8 kHz (Festival's voices are 16 kHz), each song has one singer, and
every singer sings in the same range (G2 to A#4).
Rendering runs many times faster than real time (docs/benchmarks.md has the figures).
"""

import collections
import dataclasses
import functools
import pathlib
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import soundfile as sf
import soxr

from diffvox_jax.data import synthetic_voice
from diffvox_jax.data.synthetic_voice import SungNote

SOUNDFONT = pathlib.Path('/usr/share/sounds/sf2/FluidR3_GM.sf2')
STEM_NAMES = ('vocals', 'drums', 'bass', 'other')
SATB = ('Soprano', 'Alto', 'Tenor', 'Bass')

EXCERPT_SECONDS = (20.0, 35.0)
TAIL_S = 1.0  # ringing after the last note
TEMPO_BPM = (64.0, 104.0)  # quarter notes per minute
TRANSPOSE = range(-6, 7)
SUNG_OCTAVE_DOWN = 1
PHRASE_SUNG_PROB = 0.8
BREATH_S = 0.25
MIN_SUNG_NOTE_S = 0.08  # chorale notes are >= 0.14 s at these tempi; shorter ones were cut by the excerpt
VOCAL_TO_ACCOMPANIMENT_DB = (-6.0, 3.0)
STEM_LEVEL_DB = (-4.0, 4.0)
MIXTURE_PEAK_DBFS = (-6.0, -1.0)

# General MIDI programs (0-based). Voice-like programs (choir, voice oohs, synth voice) are left out on purpose:
# the only voice in a song is the vocals stem.
HARMONY_PROGRAMS = (0, 1, 4, 5, 16, 19, 24, 25, 26, 27, 40, 41, 42, 48, 49, 56, 57, 60, 61, 65, 66, 68, 70, 71,
                    73, 81, 89, 90)
LEAD_PROGRAMS = (0, 11, 27, 40, 56, 65, 68, 71, 73, 80)
BASS_PROGRAMS = (32, 33, 34, 35, 36, 38, 39, 42, 43, 58, 70)
BASS_GUITARS = range(32, 40)  # sounded an octave lower, as bass guitar parts are
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)  # FluidR3 bank-128 presets: standard, room, power, electronic, 808, jazz, brush
HAT_NOTES = (42, 42, 44, 51, 54)  # closed hi-hat (twice as likely), pedal hi-hat, ride, tambourine
SNARE_NOTES = (38, 40, 37, 39)  # snare, electric snare, side stick, clap
KICK, CRASH = 36, 49
DRUM_CHANNEL = 9

MIDI_TICKS_PER_QUARTER = 480
MIDI_TEMPO_US = 500_000  # 120 bpm: one tick is 1/960 s, so MIDI times are plain seconds
TICKS_PER_SECOND = MIDI_TICKS_PER_QUARTER * 1_000_000 / MIDI_TEMPO_US
FLUIDSYNTH_RATES = (8000, 96000)
FLUIDSYNTH_GAIN = 0.4
TOOL_TIMEOUT_S = 120
APT_HINT = ('apt-get install festival ' + ' '.join(singer.package for singer in synthetic_voice.SINGERS)
            + ' fluidsynth fluid-soundfont-gm')


class MissingToolError(RuntimeError):
  """A program or data file the synthetic songs need is not installed; the message names the Debian package."""


@dataclasses.dataclass(frozen=True)
class SyntheticSong:
  """One rendered song.

  Attributes:
    name: `synthetic-<seed>-<chorale>`.
    stems: `vocals`, `drums`, `bass`, `other`, each `(time, 2)` float32 at `sample_rate`; their sum is the mixture.
    notes: the sung notes, `(start_s, end_s, midi_pitch)` at the pitch actually sung.
    sample_rate: samples per second of every stem.
    metadata: the random choices (chorale, tempo, transposition, programs, levels), JSON-serialisable.
  """
  name: str
  stems: dict[str, np.ndarray]
  notes: list[SungNote]
  sample_rate: int
  metadata: dict[str, object]


def check_tools() -> None:
  """Raises MissingToolError naming every missing program or data file and its Debian package."""
  missing = []
  for program, package in (('festival', 'festival'), ('fluidsynth', 'fluidsynth')):
    if shutil.which(program) is None:
      missing.append(f'`{program}` not found on PATH (Debian package {package})')
  singers = [(singer.path, f'Festival voice {singer.voice}', singer.package) for singer in synthetic_voice.SINGERS]
  for path, what, package in (*singers, (SOUNDFONT, 'FluidR3 GM soundfont', 'fluid-soundfont-gm')):
    if not path.exists():
      missing.append(f'{what} not found at {path} (Debian package {package})')
  if missing:
    raise MissingToolError(f'synthetic songs need: {"; ".join(missing)}; install with `{APT_HINT}`')


# ----------------------------------------------------------------------------------------------------- chorales

class ScoreNote(collections.namedtuple('ScoreNote', 'start_q end_q pitch phrase_end')):
  """A note in quarter-note units from the chorale's start; `phrase_end` marks a fermata."""


@dataclasses.dataclass(frozen=True)
class Chorale:
  """The four voices of a chorale and its bar grid, in quarter notes."""
  name: str
  voices: dict[str, list[ScoreNote]]  # keys: SATB names
  bar_origins: list[float]  # downbeat of every bar; the first is negative-aligned for a pick-up bar
  bar_lengths: list[float]
  length: float


@functools.lru_cache(maxsize=1)
def chorale_names() -> tuple[str, ...]:
  """The Riemenschneider chorales shipped with music21, in the corpus's fixed order (e.g. `bach/bwv269`)."""
  from music21 import corpus  # pylint: disable=import-outside-toplevel
  return tuple(corpus.chorales.Iterator(returnType='filename'))


def load_chorale(name: str) -> Chorale | None:
  """Parses a chorale; None when it lacks parts named exactly Soprano, Alto, Tenor and Bass."""
  from music21 import corpus, expressions  # pylint: disable=import-outside-toplevel
  score = corpus.parse(name)
  parts = {part.partName: part for part in score.parts}
  if not all(voice in parts for voice in SATB):
    return None
  voices = {}
  for voice in SATB:
    notes = []
    for element in parts[voice].stripTies().flatten().notes:
      if element.quarterLength <= 0:
        continue  # grace notes
      pitch = max(p.midi for p in element.pitches)
      fermata = any(isinstance(e, expressions.Fermata) for e in element.expressions)
      notes.append(ScoreNote(float(element.offset), float(element.offset + element.quarterLength), pitch, fermata))
    voices[voice] = notes
  measures = list(parts['Soprano'].getElementsByClass('Measure'))
  offsets = [float(m.offset) for m in measures]
  lengths = [float(m.barDuration.quarterLength) for m in measures]
  origins = list(offsets)
  if len(offsets) > 1:
    origins[0] = offsets[1] - lengths[0]
  return Chorale(name, voices, origins, lengths, float(score.highestTime))


def pick_chorale(rng: np.random.Generator) -> Chorale:
  """A chorale drawn from the rng; one without the four SATB parts is replaced by the next in corpus order."""
  names = chorale_names()
  first = int(rng.integers(len(names)))
  for step in range(len(names)):
    chorale = load_chorale(names[(first + step) % len(names)])
    if chorale is not None:
      return chorale
  raise RuntimeError('music21 corpus holds no chorale with Soprano, Alto, Tenor and Bass parts')


# -------------------------------------------------------------------------------------------------- arrangement

@dataclasses.dataclass(frozen=True)
class Arrangement:
  """Every random choice of a song except the per-note humanisation."""
  tempo_bpm: float
  start_q: float
  end_q: float
  transpose: int
  sung_shift: int  # semitones added to the transposed soprano to get the sung pitch
  programs: dict[str, int]  # alto, tenor, lead, bass
  pans: dict[str, float]  # -1 (left) .. 1 (right), per part and for vocals
  velocities: dict[str, int]
  articulation: float  # fraction of the written length an instrument holds a note
  double_melody: bool  # the lead instrument also plays the sung phrases
  kit: int
  groove: str  # straight | push | half
  hat_note: int
  hat_step: float
  snare_note: int
  crash_every: int
  stem_db: dict[str, float]  # drums, bass, other relative levels
  vocal_to_accompaniment_db: float
  mixture_peak_dbfs: float

  @property
  def seconds_per_quarter(self) -> float:
    return 60.0 / self.tempo_bpm


def _sung_transposition(rng: np.random.Generator, soprano: list[ScoreNote]) -> tuple[int, int]:
  """(transpose, sung_shift) keeping the sung line in Festival's range; clipped later if no key fits."""
  low, high = synthetic_voice.SUNG_PITCH_RANGE
  lowest, highest = min(n.pitch for n in soprano), max(n.pitch for n in soprano)
  for octaves in (SUNG_OCTAVE_DOWN, 0, 2):
    shift = -12 * octaves
    fitting = [t for t in TRANSPOSE if lowest + t + shift >= low and highest + t + shift <= high]
    if fitting:
      return int(rng.choice(fitting)), shift
  return 0, -12 * SUNG_OCTAVE_DOWN


def draw_arrangement(rng: np.random.Generator, chorale: Chorale, max_seconds: float | None) -> Arrangement:
  """Draws tempo, excerpt window, key, instruments, groove and levels."""
  tempo = float(rng.uniform(*TEMPO_BPM))
  seconds_per_quarter = 60.0 / tempo
  excerpt_s = float(rng.uniform(*EXCERPT_SECONDS))
  if max_seconds is not None:
    excerpt_s = min(excerpt_s, max_seconds)
  excerpt_q = excerpt_s / seconds_per_quarter
  starts = [o for o in chorale.bar_origins if o >= 0 and o + excerpt_q <= chorale.length] or [0.0]
  start_q = float(rng.choice(starts))
  end_q = min(start_q + excerpt_q, chorale.length)
  soprano = [n for n in chorale.voices['Soprano'] if start_q <= n.start_q < end_q] or chorale.voices['Soprano']
  transpose, sung_shift = _sung_transposition(rng, soprano)
  programs = {'alto': int(rng.choice(HARMONY_PROGRAMS)), 'tenor': int(rng.choice(HARMONY_PROGRAMS)),
              'lead': int(rng.choice(LEAD_PROGRAMS)), 'bass': int(rng.choice(BASS_PROGRAMS))}
  pans = {'alto': float(rng.uniform(-0.7, 0.7)), 'tenor': float(rng.uniform(-0.7, 0.7)),
          'lead': float(rng.uniform(-0.4, 0.4)), 'bass': float(rng.uniform(-0.15, 0.15)),
          'vocals': float(rng.uniform(-0.1, 0.1))}
  velocities = {part: int(rng.integers(70, 111)) for part in ('alto', 'tenor', 'lead', 'bass')}
  return Arrangement(
      tempo_bpm=tempo, start_q=start_q, end_q=end_q, transpose=transpose, sung_shift=sung_shift,
      programs=programs, pans=pans, velocities=velocities, articulation=float(rng.uniform(0.75, 1.0)),
      double_melody=bool(rng.random() < 0.25), kit=int(rng.choice(DRUM_KITS)),
      groove=str(rng.choice(('straight', 'push', 'half'))), hat_note=int(rng.choice(HAT_NOTES)),
      hat_step=float(rng.choice((0.5, 0.5, 1.0, 0.25) if tempo < 84 else (0.5, 0.5, 1.0))),
      snare_note=int(rng.choice(SNARE_NOTES)), crash_every=int(rng.choice((4, 8))),
      stem_db={stem: float(rng.uniform(*STEM_LEVEL_DB)) for stem in ('drums', 'bass', 'other')},
      vocal_to_accompaniment_db=float(rng.uniform(*VOCAL_TO_ACCOMPANIMENT_DB)),
      mixture_peak_dbfs=float(rng.uniform(*MIXTURE_PEAK_DBFS)))


# ------------------------------------------------------------------------------------------------ note timelines

class TimedNote(collections.namedtuple('TimedNote', 'start_s end_s pitch velocity')):
  """An instrument note in seconds from the song's start."""


def _excerpt(notes: list[ScoreNote], arrangement: Arrangement) -> list[ScoreNote]:
  """Notes inside the excerpt window, clipped to it and shifted so the window starts at 0."""
  out = []
  for note in notes:
    start, end = max(note.start_q, arrangement.start_q), min(note.end_q, arrangement.end_q)
    if end > start:
      at_end = note.end_q > arrangement.end_q
      out.append(ScoreNote(start - arrangement.start_q, end - arrangement.start_q, note.pitch,
                           note.phrase_end or at_end))
  return out


def _phrases(notes: list[ScoreNote]) -> list[list[ScoreNote]]:
  """Splits a voice at fermatas and rests."""
  phrases: list[list[ScoreNote]] = []
  for note in notes:
    if not phrases or phrases[-1][-1].phrase_end or note.start_q > phrases[-1][-1].end_q:
      phrases.append([])
    phrases[-1].append(note)
  return phrases


def vocal_line(rng: np.random.Generator, soprano: list[ScoreNote],
               arrangement: Arrangement) -> tuple[list[SungNote], list[ScoreNote]]:
  """Splits the excerpted soprano into the sung notes (a breath before every phrase end) and the notes of the
  phrases left to the lead instrument."""
  low, high = synthetic_voice.SUNG_PITCH_RANGE
  phrases = _phrases(soprano)
  sung = rng.random(len(phrases)) < PHRASE_SUNG_PROB
  if phrases and not sung.any():
    sung[int(np.argmax([p[-1].end_q - p[0].start_q for p in phrases]))] = True
  spq = arrangement.seconds_per_quarter
  notes, unsung = [], []
  for phrase, is_sung in zip(phrases, sung, strict=True):
    if not is_sung:
      unsung.extend(phrase)
      continue
    for index, note in enumerate(phrase):
      start_s, end_s = note.start_q * spq, note.end_q * spq
      if index == len(phrase) - 1:
        end_s -= min(BREATH_S, 0.4 * (end_s - start_s))
      if end_s - start_s < MIN_SUNG_NOTE_S:
        continue  # a sliver cut by the excerpt's end
      pitch = int(np.clip(note.pitch + arrangement.transpose + arrangement.sung_shift, low, high))
      notes.append(SungNote(start_s, end_s, pitch))
  return notes, unsung


def instrument_notes(rng: np.random.Generator, notes: list[ScoreNote], arrangement: Arrangement, part: str,
                     octave_shift: int = 0) -> list[TimedNote]:
  """Transposed, articulated and humanised (+-5 ms, +-8 velocity) notes of one excerpted instrument part."""
  spq = arrangement.seconds_per_quarter
  out = []
  for note in notes:
    start_s = max(note.start_q * spq + rng.uniform(-0.005, 0.005), 0.0)
    end_s = start_s + (note.end_q - note.start_q) * spq * arrangement.articulation
    velocity = int(np.clip(arrangement.velocities[part] + rng.integers(-8, 9), 1, 127))
    out.append(TimedNote(start_s, end_s, note.pitch + arrangement.transpose + octave_shift, velocity))
  return out


def drum_notes(rng: np.random.Generator, chorale: Chorale, arrangement: Arrangement) -> list[TimedNote]:
  """A groove on the chorale's bars: kick, snare backbeat (waltz beats in odd meters), hats/ride, crashes."""
  spq = arrangement.seconds_per_quarter
  out = []
  for bar, (origin, length) in enumerate(zip(chorale.bar_origins, chorale.bar_lengths, strict=True)):
    beats = max(int(round(length)), 1)
    even = beats % 2 == 0
    kick = [0.0] + ([beats / 2] if even and arrangement.groove != 'half' else [])
    if arrangement.groove == 'push' and even:
      kick.append(beats / 2 - 0.5)
    if even:
      snare = [beats / 2] if arrangement.groove == 'half' else [float(b) for b in range(1, beats, 2)]
    else:
      snare = [float(b) for b in range(1, beats)]
    hats = list(np.arange(0.0, length, arrangement.hat_step))
    hits = ([(q, KICK, 100) for q in kick] + [(q, arrangement.snare_note, 92) for q in snare]
            + [(float(q), arrangement.hat_note, 80 if float(q).is_integer() else 62) for q in hats])
    if bar % arrangement.crash_every == 0:
      hits.append((0.0, CRASH, 96))
    for position, note, velocity in hits:
      q = origin + position - arrangement.start_q
      if 0 <= q < arrangement.end_q - arrangement.start_q:
        start_s = max(q * spq + rng.uniform(-0.004, 0.004), 0.0)
        out.append(TimedNote(start_s, start_s + 0.1, note, int(np.clip(velocity + rng.integers(-10, 11), 1, 127))))
  return out


def accompaniment_parts(rng: np.random.Generator, chorale: Chorale, voices: dict[str, list[ScoreNote]],
                        unsung: list[ScoreNote], arrangement: Arrangement) -> dict[str, dict[int, tuple]]:
  """MIDI channels per accompaniment stem: `{stem: {channel: (program, pan, notes)}}` for `midi_file`.

  `other` holds alto, tenor and a lead instrument that plays the soprano where nobody sings it (and doubles the
  singer when `arrangement.double_melody`); bass guitars play the bass an octave down where it stays above E1.
  """
  programs, pans = arrangement.programs, arrangement.pans
  lowest_bass = min((n.pitch for n in voices['Bass']), default=0) + arrangement.transpose
  bass_shift = -12 if programs['bass'] in BASS_GUITARS and lowest_bass - 12 >= 28 else 0
  melody = voices['Soprano'] if arrangement.double_melody else unsung
  return {
      'drums': {DRUM_CHANNEL: (arrangement.kit, 0.0, drum_notes(rng, chorale, arrangement))},
      'bass': {0: (programs['bass'], pans['bass'],
                   instrument_notes(rng, voices['Bass'], arrangement, 'bass', bass_shift))},
      'other': {1: (programs['alto'], pans['alto'], instrument_notes(rng, voices['Alto'], arrangement, 'alto')),
                2: (programs['tenor'], pans['tenor'], instrument_notes(rng, voices['Tenor'], arrangement, 'tenor')),
                3: (programs['lead'], pans['lead'], instrument_notes(rng, melody, arrangement, 'lead'))},
  }


# ---------------------------------------------------------------------------------------------- MIDI + FluidSynth

def _vlq(value: int) -> bytes:
  """MIDI variable-length quantity."""
  out = [value & 0x7F]
  value >>= 7
  while value:
    out.append(0x80 | (value & 0x7F))
    value >>= 7
  return bytes(reversed(out))


def midi_file(channels: dict[int, tuple[int, float, list[TimedNote]]], end_s: float) -> bytes:
  """A format-0 standard MIDI file at 120 bpm (one tick = 1/960 s).

  Args:
    channels: MIDI channel -> (GM program, pan in [-1, 1], notes). Channel 9 is the drum channel, where the
      program selects the kit.
    end_s: the file's end (the end-of-track event), so FluidSynth renders release tails up to it.
  """
  events = []  # (tick, order, message); at equal ticks: set-up, then note-offs, then note-ons
  for channel, (program, pan, notes) in channels.items():
    events.append((0, 0, bytes([0xC0 | channel, program])))
    events.append((0, 0, bytes([0xB0 | channel, 10, int(round(64 + 63 * pan))])))
    events.append((0, 0, bytes([0xB0 | channel, 7, 100])))
    for note in notes:
      on, off = round(note.start_s * TICKS_PER_SECOND), round(note.end_s * TICKS_PER_SECOND)
      events.append((on, 2, bytes([0x90 | channel, note.pitch, note.velocity])))
      events.append((max(off, on + 1), 1, bytes([0x80 | channel, note.pitch, 0])))
  track = bytearray(b'\x00\xff\x51\x03' + MIDI_TEMPO_US.to_bytes(3, 'big'))
  now = 0
  for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
    track += _vlq(tick - now) + message
    now = tick
  track += _vlq(max(round(end_s * TICKS_PER_SECOND) - now, 0)) + b'\xff\x2f\x00'
  return (b'MThd' + struct.pack('>IHHH', 6, 0, 1, MIDI_TICKS_PER_QUARTER)
          + b'MTrk' + struct.pack('>I', len(track)) + bytes(track))


def render_midi(midi: bytes, length: int, sample_rate: int, workdir: pathlib.Path, name: str) -> np.ndarray:
  """Renders MIDI bytes with FluidSynth (no reverb, no chorus, float output): `(length, 2)` float32."""
  render_rate = int(np.clip(sample_rate, *FLUIDSYNTH_RATES))
  midi_path, wav_path = workdir / f'{name}.mid', workdir / f'{name}.wav'
  midi_path.write_bytes(midi)
  command = ['fluidsynth', '-ni', '-q', '-R', '0', '-C', '0', '-g', str(FLUIDSYNTH_GAIN), '-r', str(render_rate),
             '-o', 'synth.dynamic-sample-loading=1', '-O', 'float', '-T', 'wav', '-F', str(wav_path),
             str(SOUNDFONT), str(midi_path)]
  result = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
  if result.returncode != 0 or not wav_path.is_file():
    raise RuntimeError(f'fluidsynth failed on {midi_path} (exit {result.returncode}): '
                       f'{" ".join((result.stderr or result.stdout).split())[-500:]}')
  audio, rate = sf.read(wav_path, dtype='float32', always_2d=True)
  if rate != sample_rate:
    audio = soxr.resample(audio, rate, sample_rate, quality='HQ').astype(np.float32)
  out = np.zeros((length, 2), np.float32)
  out[:min(length, len(audio))] = audio[:length]
  return out


# --------------------------------------------------------------------------------------------------------- levels

def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
  """Constant-power pan of `(time,)` to `(time, 2)`."""
  angle = (pan + 1.0) * np.pi / 4
  return np.stack([mono * np.cos(angle), mono * np.sin(angle)], axis=-1).astype(np.float32)


def _rms(audio: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def _active_rms(audio: np.ndarray, sample_rate: int, floor_db: float = 40.0) -> float:
  """RMS over the 50 ms frames within `floor_db` of the loudest frame (a level that ignores silence)."""
  frame = max(sample_rate // 20, 1)
  usable = len(audio) // frame * frame
  energy = np.mean(np.square(audio[:usable], dtype=np.float64).reshape(-1, frame * audio.shape[-1]), axis=-1)
  if energy.size == 0 or energy.max() <= 0:
    return 0.0
  return float(np.sqrt(np.mean(energy[energy >= energy.max() * 10 ** (-floor_db / 10)])))


def _level(stems: dict[str, np.ndarray], notes: list[SungNote], arrangement: Arrangement,
           sample_rate: int) -> dict[str, np.ndarray]:
  """Sets stem levels (relative dB), the vocal-to-accompaniment ratio over the sung notes, and the mixture peak."""
  out = {}
  for stem in ('drums', 'bass', 'other'):
    rms = _active_rms(stems[stem], sample_rate)
    gain = 10 ** (arrangement.stem_db[stem] / 20) * (0.1 / rms if rms > 0 else 0.0)
    out[stem] = stems[stem] * np.float32(gain)
  accompaniment = out['drums'] + out['bass'] + out['other']
  sung = np.zeros(len(accompaniment), bool)
  for note in notes:
    sung[round(note.start_s * sample_rate):round(note.end_s * sample_rate)] = True
  vocal_rms, accompaniment_rms = _rms(stems['vocals'][sung]), _rms(accompaniment[sung])
  vocal_gain = (10 ** (arrangement.vocal_to_accompaniment_db / 20) * accompaniment_rms / vocal_rms
                if vocal_rms > 0 and accompaniment_rms > 0 else 1.0)
  out['vocals'] = stems['vocals'] * np.float32(vocal_gain)
  peak = float(np.abs(sum(out.values())).max(initial=0.0))
  scale = np.float32(10 ** (arrangement.mixture_peak_dbfs / 20) / peak if peak > 0 else 1.0)
  return {stem: (out[stem] * scale).astype(np.float32) for stem in STEM_NAMES}


# ----------------------------------------------------------------------------------------------------------- song

def render_song(seed: int, sample_rate: int = 44100, max_seconds: float | None = None) -> SyntheticSong:
  """Renders the synthetic song of a seed.

  Args:
    seed: any non-negative integer; the same seed gives identical arrays.
    sample_rate: rate of the returned stems.
    max_seconds: caps the song's length (the excerpt is shortened to fit); None keeps the drawn 20-35 s
      excerpt plus a `TAIL_S` ring-out.

  Returns:
    A SyntheticSong with stems `vocals`, `drums`, `bass`, `other`, each `(time, 2)` float32.

  Raises:
    MissingToolError: Festival, its voice, FluidSynth or the soundfont is not installed.
  """
  if seed < 0:
    raise ValueError(f'synthetic song seed must be >= 0, got {seed}')
  if max_seconds is not None and max_seconds <= 0:
    raise ValueError(f'max_seconds must be positive, got {max_seconds}')
  check_tools()
  rng = np.random.default_rng(seed)
  chorale = pick_chorale(rng)
  arrangement = draw_arrangement(rng, chorale, max_seconds)
  voices = {voice: _excerpt(notes, arrangement) for voice, notes in chorale.voices.items()}
  notes, unsung = vocal_line(rng, voices['Soprano'], arrangement)
  singer = synthetic_voice.SINGERS[rng.integers(len(synthetic_voice.SINGERS))]
  words = [str(w) for w in rng.choice(singer.syllables, size=len(notes))]
  parts = accompaniment_parts(rng, chorale, voices, unsung, arrangement)
  duration_s = (arrangement.end_q - arrangement.start_q) * arrangement.seconds_per_quarter + TAIL_S
  if max_seconds is not None:
    duration_s = min(duration_s, max_seconds)
  length = int(round(duration_s * sample_rate))
  with tempfile.TemporaryDirectory(prefix='diffvox_synthetic_') as tmp:
    workdir = pathlib.Path(tmp)
    stems = {stem: render_midi(midi_file(channels, duration_s), length, sample_rate, workdir, stem)
             for stem, channels in parts.items()}
    vocals = synthetic_voice.sing(notes, words, singer, length, sample_rate, workdir)
  stems['vocals'] = _pan(vocals, arrangement.pans['vocals'])
  stems = _level(stems, notes, arrangement, sample_rate)
  metadata = {'seed': seed, 'chorale': chorale.name, **dataclasses.asdict(arrangement), 'singer': singer.voice,
              'syllables': words}
  return SyntheticSong(f'synthetic-{seed:06d}-{chorale.name.split("/")[-1]}', stems, notes, sample_rate, metadata)
