"""Reading training statistics back: convergence milestones of a run."""

from __future__ import annotations

import csv
import os

import numpy as np


def read_stats(run_dir: str, name: str = 'train_stats.csv') -> dict[str, np.ndarray]:
  """Columns of a run's statistics CSV as float arrays."""
  with open(os.path.join(run_dir, name), newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows:
    return {}
  return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def moving_mean(x: np.ndarray, window: int) -> np.ndarray:
  """Mean of x[t - window + 1 : t + 1] for t >= window - 1 (length len(x) - window + 1)."""
  c = np.cumsum(np.insert(np.asarray(x, np.float64), 0, 0.0))
  return (c[window:] - c[:-window]) / window


def iterations_to_reach(energies: np.ndarray, reference: float, threshold: float,
                        window: int = 100) -> int | None:
  """First iteration count t at which the mean of the last `window` energies is within
  `threshold` (hartree) above or below `reference`; None if never."""
  if len(energies) < window:
    return None
  m = moving_mean(energies, window)
  hits = np.nonzero(np.abs(m - reference) <= threshold)[0]
  return int(hits[0]) + window if len(hits) else None


def seconds_per_iteration(stats: dict[str, np.ndarray], skip: int = 10) -> float:
  """Median wall-clock seconds per iteration from a run's `wall_time` column.

  The first `skip` iterations (compilation) are left out; the median also ignores the
  rare slow iterations of checkpoint writes and of compilation after a restart.
  """
  wall = np.asarray(stats['wall_time'])[skip:]
  if len(wall) < 2:
    raise ValueError(f'need more than {skip + 1} iterations to time a run, have {skip + len(wall)}')
  return float(np.median(np.diff(wall)))
