import numpy as np
import pytest

from vmc import statistics


def _ar1(phi, n, seed):
  """x_t = phi x_{t-1} + e_t, e_t ~ N(0, 1), started in equilibrium."""
  rng = np.random.default_rng(seed)
  e = rng.standard_normal(n)
  x = np.empty(n)
  x[0] = e[0] / np.sqrt(1 - phi ** 2)
  for t in range(1, n):
    x[t] = phi * x[t - 1] + e[t]
  return x


@pytest.mark.parametrize('seed', range(4))
def test_reblocking_recovers_the_standard_error_of_an_ar1_series(seed):
  phi, n = 0.9, 2 ** 17
  exact = 1.0 / ((1.0 - phi) * np.sqrt(n))  # sqrt(var / n * (1 + phi) / (1 - phi))
  est = statistics.estimate(_ar1(phi, n, seed))
  assert est.converged
  assert abs(est.error / exact - 1.0) < 0.2, (est, exact)
  assert est.error_of_error < 0.1 * est.error
  assert abs(est.mean) < 4 * exact
  assert est.naive_error < 0.3 * exact  # the naive error is ~4x too small here
  assert 12 < est.tau < 28  # (1 + phi) / (1 - phi) = 19
  assert est.block >= 16


def test_uncorrelated_samples_keep_the_naive_error():
  x = np.random.default_rng(0).standard_normal(4096) + 3.0
  est = statistics.estimate(x)
  assert est.converged and est.tau < 1.5
  assert abs(est.error / (1 / 64) - 1) < 0.15
  assert abs(est.mean - 3.0) < 4 / 64


def test_degenerate_series():
  assert np.isnan(statistics.estimate([]).mean)
  short = statistics.estimate([1.0, 2.0, np.nan])
  assert short.mean == 1.5 and np.isnan(short.error) and short.n == 2
  flat = statistics.estimate(np.full(100, -2.5))
  assert flat.mean == -2.5 and flat.error == 0.0
  # Too short for its correlation: reported, not hidden.
  assert not statistics.estimate(_ar1(0.999, 256, 0)).converged
