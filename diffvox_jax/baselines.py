"""The two reference systems every results table shows beside the model.

- `mixture_estimate`: the mixture itself as the vocal estimate (the lower bound; no separation at all).
- `oracle_irm`: the ideal ratio mask of sigsep's oracle baselines (sigsep-mus-oracle `IRM.py`, alpha = 2): the
  mask |V|^alpha / (|V|^alpha + |A|^alpha + eps) from the true vocals V and accompaniment A = mixture - vocals,
  applied to the mixture STFT and inverted. STFT: `scipy.signal.stft` / `istft` with a periodic Hann window of
  `n_fft` = 2048 samples and hop 1024 (sigsep's `nperseg=2048` with scipy's default half overlap), every channel
  independently, eps = float64 machine epsilon. sigsep sums the spectrograms of the four MUSDB stems in the
  denominator; here the accompaniment is one source, as the vocals/accompaniment task defines it.
"""

import numpy as np
from scipy import signal

IRM_N_FFT = 2048
IRM_HOP = 1024
IRM_ALPHA = 2.0


def mixture_estimate(mixture: np.ndarray) -> np.ndarray:
  """The lower-bound baseline: `(time, channels)` mixture returned as the vocal estimate."""
  return np.asarray(mixture, np.float32)


def _stft(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """`(time, channels)` -> `(channels, freqs, frames)` complex STFT."""
  return signal.stft(audio.T, nperseg=n_fft, noverlap=n_fft - hop, window='hann')[-1]


def oracle_irm(mixture: np.ndarray, vocals: np.ndarray, *, n_fft: int = IRM_N_FFT, hop: int = IRM_HOP,
               alpha: float = IRM_ALPHA) -> np.ndarray:
  """The oracle ideal-ratio-mask vocal estimate (an upper reference that uses the true stems).

  Args:
    mixture: `(time, channels)` mixture.
    vocals: `(time, channels)` true vocals; the accompaniment is `mixture - vocals`.
    n_fft: STFT window length in samples (Hann).
    hop: STFT hop in samples.
    alpha: spectrogram exponent (2: power, sigsep's IRM2; 1: magnitude).
  Returns:
    `(time, channels)` float32 vocal estimate, the length of `mixture`.
  """
  mixture = np.asarray(mixture, np.float64)
  vocals = np.asarray(vocals, np.float64)
  if mixture.shape != vocals.shape or mixture.ndim != 2:
    raise ValueError(f'oracle_irm: mixture {mixture.shape} and vocals {vocals.shape} must both be (time, channels)')
  length = len(mixture)
  if length < n_fft:  # scipy would shrink the window to the signal: zero-pad to one full window instead.
    mixture, vocals = (np.pad(x, ((0, n_fft - length), (0, 0))) for x in (mixture, vocals))
  vocal_power = np.abs(_stft(vocals, n_fft, hop)) ** alpha
  accompaniment_power = np.abs(_stft(mixture - vocals, n_fft, hop)) ** alpha
  mask = vocal_power / (vocal_power + accompaniment_power + np.finfo(np.float64).eps)
  masked = mask * _stft(mixture, n_fft, hop)
  estimate = signal.istft(masked, nperseg=n_fft, noverlap=n_fft - hop, window='hann')[1].T
  if len(estimate) < length:
    estimate = np.pad(estimate, ((0, length - len(estimate)), (0, 0)))
  return estimate[:length].astype(np.float32)
