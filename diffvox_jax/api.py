"""The Python API: separate songs in a few lines, with the defaults and the errors of `diffvox separate`.

    from diffvox_jax.api import Separator

    separator = Separator.from_pretrained()                    # the packaged default model (`diffvox models`)
    vocals, instrumental = separator.separate(song, 44100)     # numpy (time,) or (time, channels) at any rate
    paths = separator.separate_file('song.mp3', 'separated')   # separated/song/vocals.wav, instrumental.wav

`from_pretrained` takes a packaged model's name, a training workdir or an exported model folder, and the sampler
settings by their config names (`steps=`, `eta=`, `num_samples=`, ...; see `configs/base.py`). Arrays come back at
the input's rate, length and shape. The same seed gives the same vocals as `diffvox separate --seed`. Bad input
raises a `ValueError` (`audio.AudioError` or `separate.SeparationError` for a file, `inference.CheckpointError`
for a model) whose one-line message names it.
"""

import dataclasses
import os
import pathlib

import jax
import ml_collections
import numpy as np

from diffvox_jax import audio, inference, sampler
from diffvox_jax import config as config_lib
from diffvox_jax import separate as separate_lib

DEFAULT_OUT = 'separated'


@dataclasses.dataclass(frozen=True)
class Separator:
  """A loaded model ready to separate arrays and files.

  Attributes:
    engine: the chunked, batched sampler (`separate_lib.Separator`).
    config: the model's config, sampler overrides applied.
    settings: its sampler settings.
    seed: the random seed of every separation (`jax.random.key(seed)`).
    checkpoint: where the model came from.
  """

  engine: separate_lib.Separator
  config: ml_collections.ConfigDict
  settings: sampler.SamplerSettings
  seed: int
  checkpoint: pathlib.Path

  @classmethod
  def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, *, ema: bool = True, seed: int = 0,
                      chunk_seconds: float | None = None, overlap: float | None = None,
                      batch_size: int | None = None, refining: bool = False, **sampler_overrides) -> 'Separator':
    """Loads a model.

    Args:
      name_or_path: a packaged model's name (None: the default), a training workdir (its newest checkpoint) or an
        exported model folder.
      ema: the EMA parameters of a training workdir (else the raw ones).
      seed: random seed of the sampler.
      chunk_seconds, overlap, batch_size: chunking (default: the config's `sampler` section).
      refining: the separations refine estimates passed in (`initial=`), from `sigma_start`.
      **sampler_overrides: `config.sampler` fields (`steps`, `method`, `eta`, `num_samples`, ...).
    """
    checkpoint = inference.resolve_checkpoint(None if name_or_path is None else str(name_or_path))
    config, params = inference.load_for_inference(checkpoint, use_ema=ema)
    config = config_lib.with_sampler_overrides(config, sampler_overrides, refining=refining)
    settings = sampler.SamplerSettings.from_config(config)
    chunk = None if chunk_seconds is None else separate_lib.chunk_length(config, chunk_seconds)
    engine = separate_lib.Separator.for_model(config, params, settings, chunk=chunk, overlap=overlap,
                                          batch_size=batch_size)
    return cls(engine, config, settings, int(seed), checkpoint)

  @property
  def sample_rate(self) -> int:
    """The model's own rate (inputs at any rate are converted to it and back)."""
    return self.engine.sample_rate

  @property
  def chunk_seconds(self) -> float:
    return self.engine.chunk / self.engine.sample_rate

  def separate(self, mixture: np.ndarray, sample_rate: int,
               initial: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(vocals, instrumental) of a song `(time,)` or `(time, channels)` at `sample_rate` Hz, each the shape of
    `mixture`, float32; instrumental = mixture - vocals. `initial`: a vocal estimate to refine (same shape)."""
    mixture = np.asarray(mixture, np.float32)
    if mixture.ndim not in (1, 2) or not mixture.size:
      raise ValueError(f'expected audio of shape (time,) or (time, channels), got {mixture.shape}')
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
      raise ValueError(f'sample_rate must be a positive integer (Hz), got {sample_rate!r}')
    track = mixture[:, None] if mixture.ndim == 1 else mixture
    if initial is not None:
      initial = np.asarray(initial, np.float32).reshape(track.shape)
    vocals = self.engine.separate_array(track, int(sample_rate), jax.random.key(self.seed), initial)
    vocals = vocals.reshape(mixture.shape)
    return vocals, mixture - vocals

  def separate_file(self, path: str | os.PathLike, out_dir: str | os.PathLike = DEFAULT_OUT, *,
                    track: str | None = None, stems: tuple[str, ...] = separate_lib.STEMS, file_format: str = 'wav',
                    filename: str = separate_lib.FILENAME_TEMPLATE, bits: str = '16', clip: str = 'rescale',
                    mp3_kbps: int = audio.MP3_KBPS, initial: str | os.PathLike | None = None,
                    progress: bool = True) -> separate_lib.Written:
    """Separates an audio file into `out_dir/<filename>` per stem, at the file's rate and channels (streamed).

    Args:
      path: any format `diffvox_jax.audio` reads.
      out_dir: output root.
      track: the `{track}` of the filename template (default: the file's name without suffix).
      stems: which of 'vocals', 'instrumental' to write.
      file_format: 'wav', 'flac' or 'mp3'.
      filename: template with `{track}`, `{stem}` and `{ext}`.
      bits: '16', '24' or '32f' (wav only).
      clip: 'rescale' (a stem beyond full scale is divided by its peak) or 'clamp'.
      mp3_kbps: mp3 bitrate.
      initial: a vocal estimate of the same file to refine.
      progress: a progress bar over the chunks.
    """
    path = pathlib.Path(path)
    destinations = separate_lib.template_paths(out_dir, filename, path.stem if track is None else track, stems,
                                           file_format)
    return separate_lib.separate_file(self.engine, path, destinations, rng=jax.random.key(self.seed), bits=bits,
                                  clip=clip, mp3_kbps=mp3_kbps, initial=initial, progress=progress)
