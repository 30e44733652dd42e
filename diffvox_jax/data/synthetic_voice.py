"""Sung vocals from Festival's singing mode: one syllable per note, each phrase rendered on its own.

Festival sings an XML note list (`/usr/share/festival/singing-mode.scm`):
`<DURATION SECONDS=..><PITCH FREQ=..>word</PITCH></DURATION>` per note, in one of three diphone voices
(`SINGERS`): two American English men (`kal_diphone`, `ked_diphone`) and an Italian woman (`lp_diphone`), each
with syllables its letter-to-sound rules sing on time (English words make the Italian voice drift by ~7%).
All phrases of a song go through ONE Festival process (a Scheme script; a process costs ~0.3 s to start), each
phrase into its own wav, and every phrase is placed at its written onset, so timing drift never accumulates
across phrases and the rests between phrases are exact silence.

Measured with `librosa.pyin` on each voice: sung notes land within 0.1 semitone of the written pitch from MIDI 43
(G2) to 70 (A#4); above ~71 every voice stops following the target (it tops out near 500 Hz), so callers keep the
sung line inside `SUNG_PITCH_RANGE`. The English syllables are one-syllable words with open vowels, each checked
to stay voiced over that range (close front vowels such as "me"/"sea" lose voicing at the top and are left out);
the Italian ones are consonant-vowel syllables with voiced consonants and no close "i", for the same reason.
"""

import pathlib
import subprocess
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

FESTIVAL_RATE = 16000
SUNG_PITCH_RANGE = (43, 70)
VOICES_DIR = pathlib.Path('/usr/share/festival/voices')
ENGLISH_SYLLABLES = (
    'la', 'lo', 'loo', 'ma', 'mo', 'may', 'mine', 'moon', 'no', 'nay', 'new', 'noon', 'low', 'lay', 'lie', 'rain',
    'wine', 'more', 'my', 'row', 'go', 'so', 'you', 'oh', 'love', 'light', 'home', 'night', 'sun', 'ah', 'hey',
    'wo', 'yeah')
ITALIAN_SYLLABLES = (
    'la', 'lo', 'le', 'lu', 'ma', 'mo', 'me', 'mu', 'na', 'no', 'ne', 'nu', 'ra', 'ro', 're', 'va', 'vo', 've', 'da',
    'do', 'de', 'ba', 'bo', 'be')


class Singer(NamedTuple):
  """A Festival diphone voice: its name, its folder under `VOICES_DIR`, its Debian package, its syllables."""
  voice: str
  folder: str
  package: str
  syllables: tuple[str, ...]

  @property
  def path(self) -> pathlib.Path:
    return VOICES_DIR / self.folder


SINGERS = (
    Singer('kal_diphone', 'english/kal_diphone', 'festvox-kallpc16k', ENGLISH_SYLLABLES),
    Singer('ked_diphone', 'english/ked_diphone', 'festvox-kdlpc16k', ENGLISH_SYLLABLES),
    Singer('lp_diphone', 'italian/lp_diphone', 'festvox-italp16k', ITALIAN_SYLLABLES),
)
FADE_IN_S = 0.005
RELEASE_S = 0.04
FESTIVAL_TIMEOUT_S = 120

_XML_HEADER = ('<?xml version="1.0"?>\n'
               '<!DOCTYPE SINGING PUBLIC "-//SINGING//DTD SINGING mark up//EN" "Singing.v0_1.dtd" []>\n'
               '<SINGING BPM="60">\n')

# Selects the voice and saves every utterance Festival synthesises for the current phrase as <prefix>_<index>.wav.
_SCHEME_PRELUDE = """(load (path-append datadir "init.scm"))
(voice_{voice})
(defvar part_prefix "")
(defvar part_index 0)
(define (save_part utt)
  (utt.save.wave utt (format nil "%s_%03d.wav" part_prefix part_index) 'riff)
  (set! part_index (+ 1 part_index)))
(set! tts_hooks (list utt.synth save_part))
(define (sing_phrase xml prefix)
  (set! part_prefix prefix)
  (set! part_index 0)
  (tts_file xml 'singing))
"""


class SungNote(NamedTuple):
  """One sung note: onset and offset in seconds, MIDI pitch."""
  start_s: float
  end_s: float
  midi_pitch: int


def split_phrases(notes: Sequence[SungNote], tolerance_s: float = 1e-3) -> list[list[SungNote]]:
  """Groups time-ordered notes into phrases: runs of notes each starting where the previous one ends."""
  phrases: list[list[SungNote]] = []
  for note in notes:
    if phrases and abs(note.start_s - phrases[-1][-1].end_s) <= tolerance_s:
      phrases[-1].append(note)
    else:
      phrases.append([note])
  return phrases


def phrase_xml(phrase: Sequence[SungNote], words: Sequence[str]) -> str:
  """Festival singing-mode XML for one phrase, one word (one syllable) per note, durations in seconds."""
  lines = [_XML_HEADER]
  for note, word in zip(phrase, words, strict=True):
    frequency = 440.0 * 2.0 ** ((note.midi_pitch - 69) / 12)
    lines.append(f'<DURATION SECONDS="{note.end_s - note.start_s:.4f}">'
                 f'<PITCH FREQ="{frequency:.3f}">{word}</PITCH></DURATION>\n')
  lines.append('</SINGING>\n')
  return ''.join(lines)


def _run_festival(phrases: Sequence[Sequence[SungNote]], words: Sequence[Sequence[str]], singer: Singer,
                  workdir: pathlib.Path) -> list[np.ndarray]:
  """Sings every phrase in one Festival process; returns one mono float32 wave per phrase at FESTIVAL_RATE."""
  script = [_SCHEME_PRELUDE.replace('{voice}', singer.voice)]
  for index, (phrase, phrase_words) in enumerate(zip(phrases, words, strict=True)):
    xml_path = workdir / f'phrase_{index:03d}.xml'
    xml_path.write_text(phrase_xml(phrase, phrase_words))
    script.append(f'(sing_phrase "{xml_path}" "{workdir / f"phrase_{index:03d}"}")\n')
  script_path = workdir / 'sing.scm'
  script_path.write_text(''.join(script))
  result = subprocess.run(['festival', '--script', str(script_path)], capture_output=True, text=True,
                          timeout=FESTIVAL_TIMEOUT_S, check=False)
  waves = []
  for index in range(len(phrases)):
    parts = sorted(workdir.glob(f'phrase_{index:03d}_*.wav'))
    if result.returncode != 0 or not parts:
      raise RuntimeError(f'festival failed to sing {workdir / f"phrase_{index:03d}.xml"} '
                         f'(exit {result.returncode}): {" ".join(result.stderr.split())[-500:]}')
    audio = []
    for part in parts:
      samples, rate = sf.read(part, dtype='float32', always_2d=True)
      if rate != FESTIVAL_RATE:
        raise RuntimeError(f'{part}: festival wrote {rate} Hz, expected {FESTIVAL_RATE} Hz')
      audio.append(samples[:, 0])
    wave = np.concatenate(audio)
    expected_s = phrases[index][-1].end_s - phrases[index][0].start_s
    if abs(len(wave) / FESTIVAL_RATE - expected_s) > 0.1 + 0.05 * expected_s:
      raise RuntimeError(f'festival sang {workdir / f"phrase_{index:03d}.xml"} in {len(wave) / FESTIVAL_RATE:.2f} s '
                         f'instead of {expected_s:.2f} s')
    waves.append(wave)
  return waves


def sing(notes: Sequence[SungNote], words: Sequence[str], singer: Singer, length: int, sample_rate: int,
         workdir: pathlib.Path) -> np.ndarray:
  """Renders the sung line.

  Args:
    notes: time-ordered, non-overlapping notes with pitches inside `SUNG_PITCH_RANGE`.
    words: one syllable (of `singer.syllables`) per note.
    singer: the voice that sings.
    length: output length in samples.
    sample_rate: output rate.
    workdir: an existing scratch folder for Festival's files.

  Returns:
    `(length,)` float32 mono vocals, silent outside the notes (each phrase ends `RELEASE_S` after its last note).
  """
  out = np.zeros(length, np.float32)
  if not notes:
    return out
  phrases = split_phrases(notes)
  word_iter = iter(words)
  phrase_words = [[next(word_iter) for _ in phrase] for phrase in phrases]
  for phrase, wave in zip(phrases, _run_festival(phrases, phrase_words, singer, workdir), strict=True):
    if sample_rate != FESTIVAL_RATE:
      wave = soxr.resample(wave, FESTIVAL_RATE, sample_rate, quality='HQ').astype(np.float32)
    start = round(phrase[0].start_s * sample_rate)
    stop = min(round((phrase[-1].end_s + RELEASE_S) * sample_rate), length)
    wave = wave[:max(stop - start, 0)].copy()
    fade_in = min(round(FADE_IN_S * sample_rate), len(wave))
    fade_out = min(round(RELEASE_S * sample_rate), len(wave))
    wave[:fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)
    wave[len(wave) - fade_out:] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)
    out[start:start + len(wave)] += wave
  return out
