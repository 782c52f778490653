"""Reading run statistics back: summaries with error bars, milestones, timing."""

from __future__ import annotations

import csv
import os

import numpy as np

from vmc import statistics


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


def summarize_stats(stats: dict[str, np.ndarray], window: float = 0.2) -> dict:
  """Estimates over the last `window` fraction of a run's iterations (1.0: all).

  Energy with a reblocked error; mean variance of the local energy and acceptance; the
  scalar observables present (reblocked too); wall time.
  """
  from vmc import observables  # noqa: PLC0415  (imports jax; analysis itself does not)
  n = len(stats['energy'])
  m = max(1, int(round(window * n)))
  tail = {k: np.asarray(v)[n - m:] for k, v in stats.items()}
  e = statistics.estimate(tail['energy'])
  out = {
      'iterations': n, 'window_iterations': m, 'energy': e.mean, 'energy_error': e.error,
      'energy_error_of_error': e.error_of_error, 'energy_naive_error': e.naive_error,
      'tau': e.tau, 'block': e.block, 'error_converged': e.converged,
      'variance': float(np.nanmean(tail['variance'])) if 'variance' in tail else None,
      'pmove': float(np.mean(tail['pmove'])) if 'pmove' in tail else None,
      'rejected': int(np.sum(stats.get('rejected', 0))),
      'wall_time': float(stats['wall_time'][-1]) if 'wall_time' in stats else None,
  }
  out.update(observables.summarize(tail))
  return out


def compare_to_reference(energy: float, error: float, ref) -> dict:
  """Error against a vmc.reference.Reference (or None) and % of correlation energy."""
  if ref is None:
    return {'reference_energy': None}
  out = {'reference_energy': ref.energy, 'reference_kind': ref.kind,
         'reference_source': ref.source, 'error_mha': 1000 * (energy - ref.energy),
         'error_mha_error': 1000 * error}
  if ref.hf_limit is not None and ref.hf_limit != ref.energy:
    out['correlation_energy_percent'] = 100 * (ref.hf_limit - energy) / (ref.hf_limit -
                                                                         ref.energy)
  return out
