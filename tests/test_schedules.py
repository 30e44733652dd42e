"""Sigma grids: lengths, exact endpoints, strict monotonicity, and each schedule's defining formula."""

import numpy as np
import pytest

from diffvox_jax import schedules


@pytest.mark.parametrize('name', sorted(schedules.SCHEDULES))
@pytest.mark.parametrize('steps', [1, 2, 5, 50, 1000])
@pytest.mark.parametrize('sigma_start', [1.0, 0.5, 0.01, 1e-6])
def test_grid_shape_endpoints_and_monotone(name, steps, sigma_start):
  grid = schedules.sigma_grid(name, steps, sigma_start)
  assert grid.shape == (steps + 1,)
  assert grid.dtype == np.float64
  assert grid[0] == sigma_start and grid[-1] == 0.0
  assert np.all(np.diff(grid) < 0)


def test_linear_is_the_papers_linspace():
  np.testing.assert_array_equal(schedules.sigma_grid('linear', 4), [1.0, 0.75, 0.5, 0.25, 0.0])
  np.testing.assert_allclose(schedules.sigma_grid('linear', 50, 0.6), np.linspace(0.6, 0.0, 51), rtol=0, atol=1e-15)


def test_cosine_is_denser_at_low_noise():
  grid = schedules.sigma_grid('cosine', 10)
  steps = -np.diff(grid)
  assert np.all(np.diff(steps) < 0)  # the step size shrinks towards sigma = 0.
  u = np.linspace(1, 0, 11)
  np.testing.assert_allclose(grid[1:-1], 1 - np.cos(np.pi * u[1:-1] / 2), atol=1e-15)


def test_edm_follows_the_rho_warp_of_the_noise_to_signal_ratio():
  steps = 8
  grid = schedules.sigma_grid('edm', steps)
  ratio = np.tan(np.pi * grid[:-1] / 2)
  ratio[0] = 80.0  # the first point is set to sigma = 1 (ratio infinity) exactly.
  expected = (80.0 ** (1 / 7) + np.linspace(0, 1, steps) * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
  np.testing.assert_allclose(ratio, expected, rtol=1e-9)


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match='unknown schedule'):
    schedules.sigma_grid('karras', 10)
  with pytest.raises(ValueError, match='steps'):
    schedules.sigma_grid('linear', 0)
  with pytest.raises(ValueError, match='sigma_start'):
    schedules.sigma_grid('linear', 10, 1.5)
  with pytest.raises(ValueError, match='sigma_start'):
    schedules.sigma_grid('linear', 10, 0.0)
