"""Reading run statistics back: summaries with error bars, milestones, timing."""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

from vmc import reference, statistics, systems, writers


def read_stats(run_dir: str, name: str = writers.STATS_FILES['training']) -> dict[str, np.ndarray]:
  """Columns of a run's statistics CSV as float arrays.

  Safe on a run in progress: a last row still being written is left out.
  """
  with open(os.path.join(run_dir, name), newline='') as f:
    rows = list(csv.reader(f))
  if len(rows) < 2:
    return {}
  header, body = rows[0], rows[1:]
  values = []
  for row in body:
    try:
      if len(row) != len(header):
        raise ValueError
      values.append([float(v) for v in row])
    except ValueError:
      break  # a partial last line
  data = np.array(values, np.float64).reshape(-1, len(header))
  return {k: data[:, i] for i, k in enumerate(header)}


def mode_of(run_dir: str) -> str:
  """'evaluation' for a run folder with an evaluation's statistics, else 'training'."""
  evaluation = writers.STATS_FILES['evaluation']
  return 'evaluation' if os.path.exists(os.path.join(run_dir, evaluation)) else 'training'


def stats_file(run_dir: str) -> str:
  """The name of the statistics file of the run in run_dir (writers.STATS_FILES)."""
  return writers.STATS_FILES[mode_of(run_dir)]


def system_of(run_dir: str) -> systems.System:
  """The system of a run, from its config.json (resolved as the run resolved it)."""
  from vmc import config  # noqa: PLC0415  (analysis scripts that never need it start faster)
  with open(os.path.join(run_dir, 'config.json')) as f:
    return config.system_from_json(f.read())


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
  out.update(largest_step(tail))
  out.update(observables.summarize(tail))
  k = writers.states_of(stats)
  if k:
    out.update(summarize_states(tail, k))
  return out


def largest_step(stats: dict[str, np.ndarray]) -> dict:
  """The iteration whose mean energy lies farthest from the window's mean, and how far it
  moves that mean: `energy_largest_step_shift` = mean with it - mean without it =
  (E_step - mean) / (n - 1), hartree. Non-finite (rejected) iterations are left out.

  The local energy of an approximate wavefunction has heavy tails (E_L ~ 1/d near its
  nodes): one walker can put a single iteration hartrees off. The reblocked error bar
  assumes no single iteration matters; this says when one does (`heavy_tail_note`)."""
  e = np.asarray(stats['energy'], np.float64)
  finite = np.isfinite(e)
  n = int(finite.sum())
  if n < 2:
    return {}
  deviation = np.where(finite, e - np.mean(e[finite]), 0.0)
  i = int(np.argmax(np.where(finite, np.abs(deviation), -1.0)))  # a finite one, even on ties
  return {'energy_largest_step': int(stats['step'][i]) if 'step' in stats else i,
          'energy_largest_step_energy': float(e[i]),
          'energy_largest_step_shift': float(deviation[i] / (n - 1))}


# A single iteration that moves the mean by more than this fraction of its error bar is
# reported. For Gaussian energies the largest of n iterations moves it by about
# sqrt(2 ln n / (n tau)) error bars: 0.06 for n = 4096, 0.3 for n = 100. Local energies
# are skewed: in the 22 evaluations of docs/accuracy.md (He to N, 1600 to 15 000
# iterations) the largest moved it by 0.09 to 0.46 error bars, and by 0.87 in the one run
# with a walker hundreds of hartrees off (B, seed 1).
HEAVY_TAIL_FRACTION = 0.5
HEAVY_TAIL_MIN_ITERATIONS = 100


def heavy_tail_note(summary: dict) -> str | None:
  """One line when a single iteration moves the energy by more than HEAVY_TAIL_FRACTION of
  its error bar (see `largest_step`), else None."""
  shift, error = summary.get('energy_largest_step_shift'), summary.get('energy_error')
  if (shift is None or error is None or not np.isfinite(error) or summary.get('states')
      or summary.get('window_iterations', 0) < HEAVY_TAIL_MIN_ITERATIONS
      or abs(shift) <= HEAVY_TAIL_FRACTION * error):
    return None
  return (f'one iteration (step {summary["energy_largest_step"]}, mean energy '
          f'{summary["energy_largest_step_energy"]:.4f} Ha) moves the energy by '
          f'{1000 * shift:+.2f} mHa, {abs(shift) / error:.1f} of its error bar: the local '
          'energy has a heavy tail here, so the error bar is less certain than it says; a '
          'longer run averages such iterations down')


def summarize_states(tail: dict[str, np.ndarray], k: int, blocks: int = 20) -> dict:
  """Per-state energies, excitation energies and oscillator strengths of K excited states
  (vmc.states.analyse over the rows of `tail`). 'energy' becomes the lowest state's (the
  trace of the matrix, the loss, stays as 'trace')."""
  from vmc import observables, states  # noqa: PLC0415
  series = [writers.energy_matrices(tail, k), observables.dipole_matrices(tail, k),
            observables.spin_matrices(tail, k)]
  # Rejected iterations (non-finite, rolled back by the NaN guard) are left out.
  finite = np.all([np.all(np.isfinite(s.reshape(len(s), -1)), axis=1)
                   for s in series if s is not None], axis=0)
  energy, dipoles, spins = (None if s is None else s[finite] for s in series)
  assert energy is not None
  est = states.analyse(energy, dipoles, spins, blocks)
  out: dict[str, Any] = {
      'states': k, 'trace': float(np.mean(tail['energy'])), 'state_energies': est.energies.tolist(),
      'state_energy_errors': est.energy_errors.tolist(),
      'excitation_energies_ha': est.excitations.tolist(),
      'excitation_energy_errors_ha': est.excitation_errors.tolist(),
      'excitation_energies_ev': (est.excitations * states.EV_PER_HARTREE).tolist(),
      'excitation_energy_errors_ev': (est.excitation_errors * states.EV_PER_HARTREE).tolist(),
      'jackknife_blocks': est.blocks, 'state_iterations': int(finite.sum()),
      'energy': float(est.energies[0]), 'energy_error': float(est.energy_errors[0])}
  if est.s2 is not None:
    out['state_s2'] = est.s2.tolist()
    out['state_s2_errors'] = est.s2_errors.tolist() if est.s2_errors is not None else None
  if est.oscillator_strengths is not None:
    out['oscillator_strengths'] = est.oscillator_strengths.tolist()
    out['oscillator_strength_errors'] = (est.oscillator_errors.tolist()
                                         if est.oscillator_errors is not None else None)
  return out


def compare_to_reference(energy: float, error: float,
                         ref: reference.Reference | None) -> dict:
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


def summarize_run(run_dir: str, window: float | None = None) -> dict:
  """The summary of a run (finished or running) from its folder: system, mode, the
  `summarize_stats` estimates over the last `window` (default: all of an evaluation, the
  last 20% of training), and the error against the reference energy if there is one.
  {} when no iteration is written yet."""
  mode = mode_of(run_dir)
  name = writers.STATS_FILES[mode]
  if not os.path.exists(os.path.join(run_dir, name)):
    return {}
  stats = read_stats(run_dir, name)
  if not len(stats.get('energy', [])):
    return {}
  system = system_of(run_dir)
  summary: dict[str, Any] = dict(system=system.name, hamiltonian=system.hamiltonian,
                                 mode=mode)
  summary.update(summarize_stats(
      stats, window=window if window is not None else (1.0 if mode == 'evaluation' else 0.2)))
  from vmc import observables  # noqa: PLC0415  (imports jax; analysis itself does not)
  first = int(stats['step'][len(stats['step']) - summary['window_iterations']])
  summary.update(observables.summarize_forces(run_dir, first))
  summary.update(compare_to_reference(summary['energy'], summary['energy_error'],
                                      reference.lookup(system)))
  if summary.get('states'):
    energies = summary['state_energies']
    summary['state_references'] = [
        dict(state=r.number, label=r.label, energy=r.energy, source=r.source,
             error_mha=1000 * (energies[r.number] - r.energy))
        for r in reference.excited_states(system) if r.number < summary['states']]
  return summary


def strict_json(value: Any) -> Any:
  """`value` with numpy numbers made Python ones and non-finite floats made None, so that
  json.dump(..., allow_nan=False) writes strict JSON (null, not NaN)."""
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, np.ndarray)):
    return [strict_json(v) for v in value]
  if isinstance(value, (np.integer, np.bool_)):
    return value.item()
  if isinstance(value, (float, np.floating)):
    return float(value) if np.isfinite(value) else None
  return value


def state_lines(summary: dict) -> list[str]:
  """The table of K excited states: energy, excitation energy (Ha, eV), f_0k."""
  k = summary['states']
  osc = summary.get('oscillator_strengths')
  lines = [f'{k} states (eigenvalues of the mean energy matrix; errors: jackknife over '
           f'{summary["jackknife_blocks"]} blocks of iterations):']
  for i in range(k):
    e, de = summary['state_energies'][i], summary['state_energy_errors'][i]
    line = f'  state {i}: E = {e:.6f} +- {de:.6f} Ha'
    if i:
      x, dx = summary['excitation_energies_ha'][i], summary['excitation_energy_errors_ha'][i]
      line += (f'  E - E_0 = {x:.6f} +- {dx:.6f} Ha = '
               f'{summary["excitation_energies_ev"][i]:.4f} +- '
               f'{summary["excitation_energy_errors_ev"][i]:.4f} eV')
      if osc is not None:
        err = summary.get('oscillator_strength_errors')
        line += f'  f_0{i} = {osc[i]:.4f}' + (f' +- {err[i]:.4f}' if err else '')
    if summary.get('state_s2') is not None:
      line += f'  <S^2> = {summary["state_s2"][i]:.3f}'
      if summary.get('state_s2_errors') is not None:
        line += f' +- {summary["state_s2_errors"][i]:.3f}'
    for ref in summary.get('state_references', []):
      if ref['state'] == i:
        line += f'  [{ref["label"]} exact {ref["energy"]:.6f}: error {ref["error_mha"]:+.2f} mHa]'
    lines.append(line)
  return lines


def summary_lines(summary: dict) -> list[str]:
  """The energy (with error bar and reference) and observables of a summary, as text."""
  if summary.get('states') and np.isfinite(summary['energy_error']):
    error = f' +- {summary["energy_error"]:.6f} Ha (lowest of {summary["states"]} states)'
  elif np.isfinite(summary['energy_error']):
    error = (f' +- {summary["energy_error"]:.6f} Ha (reblocked; autocorrelation time '
             f'{summary["tau"]:.1f} iterations')
    error += ('; a lower bound: the window is short for its autocorrelation time, run '
              'longer)' if not summary.get('error_converged', True) else ')')
  else:
    error = ' Ha (too few iterations for an error bar)'
  hamiltonian = summary.get('hamiltonian', 'all-electron')
  line = (f'energy ({hamiltonian}) over the last {summary["window_iterations"]} iterations: '
          f'{summary["energy"]:.6f}{error}')
  if summary.get('reference_energy') is not None:
    line += (f'; {summary["reference_kind"]} reference {summary["reference_energy"]:.6f} Ha '
             f'({summary["reference_source"]}): error {summary["error_mha"]:+.2f} mHa')
  lines = [line]
  note = heavy_tail_note(summary)
  if note:
    lines.append(note)
  if summary.get('states'):
    lines += state_lines(summary)
  if 'dipole_au' in summary:
    lines.append(f'dipole moment (a.u.): {np.round(summary["dipole_au"], 4)} +- '
                 f'{np.round(summary["dipole_error_au"], 4)}; |d| = '
                 f'{summary["dipole_norm_debye"]:.4f} D')
  if 's2' in summary:
    lines.append(f'<S^2> = {summary["s2"]:.4f} +- {summary["s2_error"]:.4f}')
  if 'forces_zvzb' in summary:
    lines.append(f'forces (zvzb estimator, hartree/bohr, over {summary["forces_iterations"]} '
                 'iterations):')
    for symbol, f, e in zip(summary['forces_atoms'], summary['forces_zvzb'],
                            summary['forces_zvzb_error'], strict=True):
      lines.append(f'  {symbol:2s} ' + '  '.join(f'{a:+.5f} +- {b:.5f}' for a, b in
                                                 zip(f, e, strict=True)))
  return lines
