"""Many geometries: potential-energy scans and geometry relaxations, as datasets.

A geometry point is two ordinary runs in its own folder:

  <point>/train   training: a cold start (the config's pretraining and optim.iterations)
                  or a warm start from another run's folder, the neighbour's
                  <point>/train in a scan (its parameters,
                  optimizer state and walkers, the walkers moved with the nuclei), then
                  `warm_iterations` more iterations
  <point>/eval    evaluation of the trained wavefunction (optim.optimizer='none',
                  `eval_iterations`), with the forces (observables.forces)

Both are `vmc.train.run` calls with all their guarantees: a signal checkpoints and stops,
and the same command continues. A point whose eval/summary.json exists is finished and
never recomputed, so a scan or relaxation killed at any moment resumes where it was.

Results (in the scan's or relaxation's folder, rewritten after every point):
  <name>.json    every point: geometry (bohr), energy +- error (hartree), forces +-
                 errors (hartree/bohr; the zvzb estimator, and hf and zv), wall times, the
                 point's folders, and the provenance (vmc.provenance)
  <name>.extxyz  the same as extended XYZ through ASE, in ASE's units (eV, angstrom,
                 eV/angstrom), which machine-learned force-field tools read: energy and
                 forces as a single-point calculation; `energy_error` per frame and
                 `forces_error` per atom as extra arrays; written when ASE is installed
                 (pip install 'vmc[ase]')
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from vmc import analysis, checkpoint, config as config_lib, geometry, parallel, provenance
from vmc import runfolder, train, writers
from vmc.errors import ConfigError
from vmc.config import Spec

Geometry = list[tuple[str, tuple[float, float, float]]]  # [(symbol, (x, y, z) bohr)]


@dataclasses.dataclass(frozen=True)
class PointPlan:
  """Iterations of each point's runs. The first point (or every point of a cold scan)
  trains for the config's optim.iterations after its pretraining."""
  warm_iterations: int = 1000  # training iterations after a warm start
  eval_iterations: int = 2000  # evaluation iterations (forces and energy)


# A relaxation steers by the forces' error bars: it needs enough evaluation iterations for
# the reblocking to give them (vmc.statistics needs 4 blocks; 20 leaves room).
MIN_RELAX_EVAL_ITERATIONS = 20


def check_plan(plan: PointPlan, relaxation: bool = False) -> None:
  """Refuses impossible iteration counts, naming the drivers' flags (scripts/scan.py,
  scripts/relax.py), before anything runs."""
  if plan.warm_iterations < 1:
    raise ConfigError(f'--warm_iterations={plan.warm_iterations}: must be 1 or more '
                      '(training iterations after each warm start)')
  least = MIN_RELAX_EVAL_ITERATIONS if relaxation else 1
  if plan.eval_iterations < least:
    why = (' (a relaxation steers by the error bars of the forces)' if relaxation else '')
    raise ConfigError(f'--eval_iterations={plan.eval_iterations}: must be at least {least}'
                      f'{why}')


def check_out(out_dir: str) -> None:
  """The output folder: given, and a folder (or not yet there)."""
  if not out_dir:
    raise ConfigError('give --out FOLDER (the same folder continues an interrupted run)')
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ConfigError(f'--out={out_dir} is a file, not a folder; give a folder')


def check_warm_from(run_dir: str) -> None:
  """A run folder to warm-start from: it exists and holds a checkpoint."""
  if not os.path.isdir(run_dir):
    raise ConfigError(f'--warm_from={run_dir}: no such folder; give a training run\'s '
                      'folder (its log.save_path)')
  if not checkpoint.list_checkpoints(run_dir):
    raise ConfigError(f'--warm_from={run_dir} holds no checkpoint (ckpt_*.npz); give a '
                      'training run\'s folder')


def check_geometries(base: Any, geometries: Sequence[Geometry], plan: PointPlan) -> None:
  """Resolves the training and evaluation specs of every geometry, so that a bad geometry
  or key is refused before the first point trains."""
  if not geometries:
    raise ConfigError('no geometries to compute')
  for atoms in geometries:
    _spec(base, atoms)
    _spec(base, atoms, **{'optim.optimizer': 'none', 'optim.iterations': plan.eval_iterations,
                          'observables.forces': True})


def _spec(base: Any, atoms: Geometry, **overrides: Any) -> Spec:
  """The spec of the config `base` (a ConfigDict) at the geometry `atoms`, with dotted
  keys overridden."""
  if base.get('budget_minutes'):
    raise ConfigError('budget_minutes is the budget of one run; a scan or relaxation trains '
                      'and evaluates every geometry for optim.iterations: set '
                      'budget_minutes=0')
  return config_lib.resolve_variant(base, {
      'system.atom': '', 'system.units': 'bohr',
      'system.molecule': [(s, tuple(float(v) for v in c)) for s, c in atoms], **overrides})


def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _finished_step(run_dir: str) -> int:
  check_warm_from(run_dir)
  return checkpoint.list_checkpoints(run_dir)[-1][0]


def run_point(base: Any, atoms: Geometry, folder: str,
              warm_from: str | None, plan: PointPlan) -> dict | None:
  """Trains and evaluates one geometry in `folder` (see the module docstring); returns
  its result record, or None if a signal stopped it (run the same call again).
  `warm_from`: a training run's folder to warm-start from (None: a cold start)."""
  _check_geometry(folder, atoms)
  summary = os.path.join(folder, 'eval', 'summary.json')
  done = _read_json(summary)
  if done is None and os.path.exists(summary) and parallel.is_main():
    runfolder.set_aside(summary, "it is written again from the evaluation's statistics")
  if done is not None and done.get('iterations', 0) < plan.eval_iterations:
    logging.info('%s: the evaluation has %s iterations, %d asked for: continuing it',
                 folder, done.get('iterations'), plan.eval_iterations)
    done = None
  if done is None:
    overrides: dict[str, Any] = {'log.save_path': os.path.join(folder, 'train')}
    if warm_from is not None:
      overrides.update({
          'log.restore_path': warm_from,
          'optim.iterations': _finished_step(warm_from) + plan.warm_iterations})
    spec = _spec(base, atoms, **overrides)
    if train.run(spec).steps < spec.optim.iterations:
      return None
    spec = _spec(base, atoms, **{'log.save_path': os.path.join(folder, 'eval'),
                                 'log.restore_path': os.path.join(folder, 'train'),
                                 'optim.optimizer': 'none',
                                 'optim.iterations': plan.eval_iterations,
                                 'observables.forces': True})
    if train.run(spec).steps < spec.optim.iterations:
      return None
    done = _read_json(os.path.join(folder, 'eval', 'summary.json'))
    if done is None:
      raise RuntimeError(f'{folder}/eval finished without a summary.json')
  trained = _read_json(os.path.join(folder, 'train', 'summary.json')) or {}
  return {
      'symbols': [s for s, _ in atoms], 'positions': [list(c) for _, c in atoms],
      'energy': done['energy'], 'energy_error': done['energy_error'],
      'forces': done['forces_zvzb'], 'forces_error': done['forces_zvzb_error'],
      **{f'forces_{k}': done[f'forces_{k}'] for k in ('hf', 'zv')},
      **{f'forces_{k}_error': done[f'forces_{k}_error'] for k in ('hf', 'zv')},
      'force_estimator': 'zvzb', 'variance': done.get('variance'),
      'eval_iterations': done['iterations'],
      'train_iterations': trained.get('iterations'),
      'train_seconds': trained.get('wall_time'), 'eval_seconds': done.get('wall_time'),
      'warm_start_from': warm_from, 'folder': folder,
      'reference_energy': done.get('reference_energy'),
  }


def _check_geometry(folder: str, atoms: Geometry) -> None:
  """Refuses a point folder that holds runs of another geometry (a changed list of
  geometries given with the same output folder)."""
  for run in ('eval', 'train'):
    path = os.path.join(folder, run, 'config.json')
    if not os.path.exists(path):
      continue
    theirs = analysis.system_of(os.path.join(folder, run))
    same = ([a.symbol for a in theirs.atoms] == [s for s, _ in atoms] and np.allclose(
        theirs.positions, np.array([c for _, c in atoms], np.float64), atol=1e-6))
    if not same:
      raise ConfigError(
          f'{folder} holds a run of {[(a.symbol, a.coords) for a in theirs.atoms]} (bohr), '
          f'not of {atoms}: the geometries differ from the ones this folder was started '
          'with; give them as before, or a new output folder')


def write_records(out_dir: str, name: str, points: Sequence[dict], extra: dict) -> None:
  """<name>.json and (with ASE) <name>.extxyz of the points so far, each atomically
  (process 0 only)."""
  if not parallel.is_main():
    return
  record = {'units': {'energy': 'hartree', 'positions': 'bohr', 'forces': 'hartree/bohr',
                      'time': 'seconds'},
            **extra, 'points': list(points), 'provenance': provenance.record()}
  text = json.dumps(record, indent=2) + '\n'
  writers.write_text_atomically(os.path.join(out_dir, f'{name}.json'), text)
  try:
    import ase  # noqa: F401, PLC0415  (an optional extra)
  except ImportError:
    logging.warning("ASE is not installed: %s.extxyz not written (pip install 'vmc[ase]')",
                    name)
    return
  writers.write_atomically(os.path.join(out_dir, f'{name}.extxyz'),
                           lambda tmp: write_extxyz(tmp, points))


def write_extxyz(path: str, points: Sequence[dict]) -> None:
  """Extended XYZ in ASE's units: one frame per point."""
  from ase import Atoms, io, units  # noqa: PLC0415
  from ase.calculators.singlepoint import SinglePointCalculator  # noqa: PLC0415
  frames = []
  for p in points:
    atoms = Atoms(p['symbols'], positions=np.asarray(p['positions']) * units.Bohr)
    to_ev_per_a = units.Hartree / units.Bohr
    atoms.info['energy_hartree'] = p['energy']
    atoms.info['source'] = 'vmc NN-VMC; forces: zvzb estimator'
    # Too short an evaluation has no error bars (null in the JSON): the frame then says so
    # instead of carrying a number.
    if p['energy_error'] is None:
      atoms.info['energy_error'] = 'none: too few evaluation iterations'
    else:
      atoms.info['energy_error'] = p['energy_error'] * units.Hartree
    errors = np.asarray(p['forces_error'], np.float64)  # None -> nan
    if np.all(np.isfinite(errors)):
      atoms.arrays['forces_error'] = errors * to_ev_per_a
    else:
      atoms.info['forces_error'] = 'none: too few evaluation iterations'
    atoms.calc = SinglePointCalculator(atoms, energy=p['energy'] * units.Hartree,
                                       forces=np.asarray(p['forces']) * to_ev_per_a)
    frames.append(atoms)
  io.write(path, frames, format='extxyz')


def scan(base: Any, geometries: Sequence[Geometry], out_dir: str,
         plan: PointPlan, warm: bool = True) -> list[dict] | None:
  """Every geometry in turn, each warm-started from the one before (unless `warm` is
  False); writes scan.json / scan.extxyz after each. None if a signal stopped it."""
  os.makedirs(out_dir, exist_ok=True)
  points: list[dict] = []
  extra = {'kind': 'scan', 'warm_starts': warm, 'plan': dataclasses.asdict(plan)}
  for k, atoms in enumerate(geometries):
    folder = os.path.join(out_dir, f'point_{k:03d}')
    warm_from = os.path.join(out_dir, f'point_{k - 1:03d}', 'train') if warm and k else None
    t0 = time.time()
    result = run_point(base, atoms, folder, warm_from, plan)
    if result is None:
      logging.warning('scan stopped at point %d of %d; run the same command again to '
                      'continue', k + 1, len(geometries))
      return None
    points.append(result)
    write_records(out_dir, 'scan', points, extra)
    error = result['energy_error']
    logging.info('scan point %d of %d: E = %.6f Ha +- %s (%.0f s this session)', k + 1,
                 len(geometries), result['energy'],
                 'no error bar (too few evaluation iterations)' if error is None
                 else f'{error:.6f}', time.time() - t0)
  return points


def relax(base: Any, start: Geometry, out_dir: str, plan: PointPlan,
          opts: geometry.RelaxOptions, max_steps: int = 20,
          warm_from: str | None = None) -> dict | None:
  """Relaxes `start` (see vmc.geometry): a point per step, each warm-started from the
  step before (the first from the training run folder `warm_from` if given, else a cold
  start); relax.json holds the trajectory and the optimizer's state and is
  rewritten after every step, so a rerun continues. Returns the record (with
  'converged'), or None if a signal stopped it."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, 'relax.json')
  saved = _read_json(path)
  if saved is None and os.path.exists(path) and parallel.is_main():
    runfolder.set_aside(path, 'the trajectory is rebuilt from the steps\' folders (finished '
                        'steps are not recomputed)')
  symbols = [s for s, _ in start]
  if saved is not None:
    first = np.array(saved['points'][0]['positions']) if saved['points'] else None
    if first is not None and not np.allclose(first, [c for _, c in start], atol=1e-6):
      raise ConfigError(f'{path} is a relaxation that started from {first.tolist()} (bohr), '
                        'not from the geometry given now; give that geometry, or a new '
                        'output folder')
    points = saved['points']
    state = geometry.RelaxState.from_json(saved['state'])
    positions = np.asarray(saved['next_positions'])
    if saved.get('converged'):
      logging.info('the relaxation in %s has converged already', out_dir)
      return saved
  else:
    points, positions = [], np.asarray([c for _, c in start], np.float64)
    state = geometry.RelaxState()
  extra: dict[str, Any] = {'kind': 'relaxation', 'plan': dataclasses.asdict(plan),
                           'options': dataclasses.asdict(opts)}
  while len(points) < max_steps:
    k = len(points)
    atoms: Geometry = [(s, (float(c[0]), float(c[1]), float(c[2])))
                       for s, c in zip(symbols, positions, strict=True)]
    folder = os.path.join(out_dir, f'step_{k:03d}')
    source = os.path.join(out_dir, f'step_{k - 1:03d}', 'train') if k else warm_from
    result = run_point(base, atoms, folder, source, plan)
    if result is None:
      logging.warning('relaxation stopped at step %d; run the same command again to '
                      'continue', k)
      return None
    forces, errors = np.asarray(result['forces']), np.asarray(result['forces_error'])
    measured_at = positions
    state, positions = geometry.relax_step(state, measured_at, forces, errors, opts)
    points.append(result)
    done = geometry.done(measured_at, forces, errors, positions, opts)
    extra.update(state=state.to_json(), next_positions=positions.tolist(), converged=done)
    write_records(out_dir, 'relax', points, extra)
    logging.info('relaxation step %d: E = %.6f +- %.6f Ha, max |F| = %.5f Ha/bohr%s', k,
                 result['energy'], result['energy_error'],
                 float(np.max(np.abs(geometry.translation_free(forces, errors)[0]))),
                 ' (zero within error bars, next step below tolerance: converged)'
                 if done else '')
    if done:
      break
  else:
    logging.warning('relaxation not converged after %d steps; raise --max_steps and run the '
                    'same command again to continue', max_steps)
  return _read_json(path)
