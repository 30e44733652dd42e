"""Sigma grids for the sampler: static numpy arrays of `steps + 1` decreasing noise levels ending at 0.

sigma is the paper's noise level in [0, 1] (alpha = cos(pi sigma / 2)). Grids are numpy (not traced) so that
the step count and schedule are compile-time constants of the sampler.
"""

import numpy as np

EDM_RHO = 7.0
EDM_NSR_MAX = 80.0  # EDM's sigma_max, as a noise-to-signal ratio tan(pi sigma / 2).
EDM_NSR_MIN = 0.002  # EDM's sigma_min.


def linear(steps: int, sigma_start: float = 1.0) -> np.ndarray:
  """The paper's grid [I]: linspace(sigma_start, 0, steps + 1) (audio-diffusion-pytorch LinearSchedule)."""
  return np.linspace(sigma_start, 0.0, steps + 1)


def cosine(steps: int, sigma_start: float = 1.0) -> np.ndarray:
  """sigma = sigma_start * (1 - cos(pi u / 2)) for u from 1 to 0: denser steps at low noise."""
  u = np.linspace(1.0, 0.0, steps + 1)
  return sigma_start * (1.0 - np.cos(np.pi * u / 2))


def _nsr_range(sigma_start: float) -> tuple[float, float]:
  """The noise-to-signal ratios tan(pi sigma / 2) a warped grid runs between: min(80, that of sigma_start) down to
  0.002 (EDM's sigma_max and sigma_min), or to half the start for a start below 0.002."""
  nsr_max = min(EDM_NSR_MAX, float(np.tan(np.pi * min(sigma_start, 1.0 - 1e-9) / 2)))
  return nsr_max, min(EDM_NSR_MIN, nsr_max / 2)


def _grid_from_nsr(nsr: np.ndarray, sigma_start: float) -> np.ndarray:
  """Noise-to-signal ratios `(steps,)` -> the sigma grid `(steps + 1,)`: mapped back, first point `sigma_start`,
  then 0."""
  grid = np.concatenate([np.arctan(nsr) * 2 / np.pi, [0.0]])
  grid[0] = sigma_start
  return grid


def edm(steps: int, sigma_start: float = 1.0) -> np.ndarray:
  """EDM's rho = 7 warp (Karras et al. 2022) on the noise-to-signal ratio tan(pi sigma / 2), over the first
  `steps` points between the ratios of `_nsr_range`; the grid stays strictly decreasing."""
  nsr_max, nsr_min = _nsr_range(sigma_start)
  u = np.linspace(0.0, 1.0, steps)
  nsr = (nsr_max ** (1 / EDM_RHO) + u * (nsr_min ** (1 / EDM_RHO) - nsr_max ** (1 / EDM_RHO))) ** EDM_RHO
  return _grid_from_nsr(nsr, sigma_start)


def log_snr(steps: int, sigma_start: float = 1.0) -> np.ndarray:
  """Uniform steps in the log-SNR log(alpha / beta) = -log tan(pi sigma / 2), the grid DPM-Solver uses, between
  the ratios of `_nsr_range` (as `edm`)."""
  nsr_max, nsr_min = _nsr_range(sigma_start)
  return _grid_from_nsr(np.exp(np.linspace(np.log(nsr_max), np.log(nsr_min), steps)), sigma_start)


SCHEDULES = {'linear': linear, 'cosine': cosine, 'edm': edm, 'log_snr': log_snr}


def sigma_grid(name: str, steps: int, sigma_start: float = 1.0) -> np.ndarray:
  """The named grid as float64, shape (steps + 1,), strictly decreasing from exactly `sigma_start` to exactly 0."""
  if name not in SCHEDULES:
    raise ValueError(f'unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}')
  if steps < 1:
    raise ValueError(f'steps must be at least 1, got {steps}')
  if not 0.0 < sigma_start <= 1.0:
    raise ValueError(f'sigma_start must lie in (0, 1], got {sigma_start}')
  grid = np.asarray(SCHEDULES[name](steps, sigma_start), dtype=np.float64)
  grid[0], grid[-1] = sigma_start, 0.0  # exact endpoints (1 - cos(pi / 2) is not exactly 1 in floating point).
  return grid
