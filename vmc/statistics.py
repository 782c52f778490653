"""Error bars for correlated Monte Carlo series: reblocking (Flyvbjerg & Petersen 1989).

Successive Metropolis samples are correlated, so the naive standard error
std(x) / sqrt(n) is too small. Averaging neighbouring pairs again and again ("blocking")
leaves the mean unchanged and makes the blocks less correlated; once blocks are longer
than the correlation time, the naive error of the block means is the true standard error.
The block length is chosen automatically with the criterion of Lee, Needs & Towler
(PRE 83, 066706 (2011)): the smallest block length B with B^3 > 2 n (s_B / s_1)^4, where
s_B is the naive error from blocks of length B and n the series length.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt


class Estimate(NamedTuple):
  mean: float
  error: float  # standard error of the mean, autocorrelation accounted for
  error_of_error: float  # of `error` itself: it comes from a finite number of blocks
  naive_error: float  # std / sqrt(n): right only for uncorrelated samples
  block: int  # block length used (1 = uncorrelated)
  tau: float  # statistical inefficiency (error / naive_error)^2: steps per independent sample
  n: int
  converged: bool  # False: even the longest usable blocks were too short; error is a lower bound

  def format(self, digits: int = 6) -> str:
    return f'{self.mean:.{digits}f} +- {self.error:.{digits}f}'


def reblock_levels(x: np.ndarray) -> list[tuple[int, int, float, float]]:
  """(block length, number of blocks, standard error, its error) for block lengths 1, 2, 4..

  Stops when fewer than 4 blocks would remain (no usable variance estimate below that).
  """
  x = np.asarray(x, np.float64)
  levels = []
  length = 1
  while len(x) >= 4:
    n = len(x)
    se = np.std(x, ddof=1) / np.sqrt(n)
    levels.append((length, n, float(se), float(se / np.sqrt(2.0 * (n - 1)))))
    x = 0.5 * (x[:n // 2 * 2:2] + x[1:n // 2 * 2:2])
    length *= 2
  return levels


def estimate(x: npt.ArrayLike) -> Estimate:
  """Mean and its standard error for a correlated series (non-finite values dropped)."""
  x = np.asarray(x, np.float64)
  finite: np.ndarray = x[np.isfinite(x)]  # named: numpy types boolean-mask indexing as Any
  n = len(finite)
  if n == 0:
    nan = float('nan')
    return Estimate(nan, nan, nan, nan, 1, nan, 0, False)
  mean = float(np.mean(finite))
  levels = reblock_levels(finite)
  if not levels:  # fewer than 4 samples: no error estimate worth the name
    nan = float('nan')
    return Estimate(mean, nan, nan, nan, 1, nan, n, False)
  naive = levels[0][2]
  if naive == 0.0:
    return Estimate(mean, 0.0, 0.0, 0.0, 1, 1.0, n, True)
  chosen, converged = levels[-1], False
  for level in levels:
    length, _, se, _ = level
    if length ** 3 > 2 * n * (se / naive) ** 4:
      chosen, converged = level, True
      break
  length, _, se, se_err = chosen
  return Estimate(mean, se, se_err, naive, length, (se / naive) ** 2, n, converged)
