"""Nuclear geometries: walkers that follow the nuclei, and a noise-aware relaxation step.

Positions are (n_atoms, 3) arrays in bohr; forces are hartree/bohr.

Warm starts. A wavefunction trained at one geometry is a good start at a nearby one (the
networks see the nuclei only through electron-nucleus vectors), and so are its walkers
once each electron is moved with its nearest nucleus (`move_walkers`).

Relaxation (`RelaxState`, `relax_step`): quasi-Newton (BFGS) on the forces estimated by
VMC, made to live with their noise:
- the forces lose their net force (`translation_free`): the sum is removed in proportion
  to each component's variance (the least-squares projection weighted by the inverse
  variances), so that a noisy nucleus (a heavy atom's core) absorbs the noise of the sum
  and a precise one keeps its value; their errors are propagated;
- the step p = B^-1 f, without net translation, scaled down so that no atom moves
  further than a trust radius; B starts as hessian_guess times the identity;
- the BFGS update of B from s = x - x_anchor and y = f_anchor - f is taken only when y.s
  is positive by more than three times its noise (propagated from the error bars): a
  noisy secant would corrupt B. The anchor (the geometry of the last accepted secant, or
  the first) is kept when an update is skipped, so the baseline grows until the secant
  stands out of the noise;
- converged when every component of the translation-free forces is zero within `sigmas`
  error bars and the model's next step moves no atom further than `step_tolerance` (for
  a soft bond, forces zero within their errors still leave the minimum uncertain by
  error / curvature).
Rotations are not projected out: noise in the perpendicular forces turns the molecule a
little, which changes no energy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def move_walkers(x: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
  """Walkers (batch, 3N) with each electron moved by the displacement of its nearest
  nucleus (nearest in the old geometry)."""
  old, new = np.asarray(old, np.float64), np.asarray(new, np.float64)
  pos = np.asarray(x).reshape(len(x), -1, 3)
  nearest = np.argmin(np.linalg.norm(pos[:, :, None, :] - old[None, None], axis=-1), axis=-1)
  return (pos + (new - old)[nearest]).reshape(np.shape(x)).astype(np.asarray(x).dtype)


def diatomic(symbols: tuple[str, str], bond_length: float) -> list[tuple[str, tuple]]:
  """A diatomic along z, first atom at the origin (bohr)."""
  return [(symbols[0], (0.0, 0.0, 0.0)), (symbols[1], (0.0, 0.0, float(bond_length)))]


@dataclasses.dataclass
class RelaxOptions:
  hessian_guess: float = 0.5  # hartree/bohr^2: B = this times the identity at the start
  trust_radius: float = 0.2  # bohr: largest move of any atom in one step
  sigmas: float = 2.0  # converged when every |F| < sigmas * its error bar
  step_tolerance: float = 0.01  # bohr: ... and the next step moves no atom further


@dataclasses.dataclass
class RelaxState:
  """What the next step needs: the secant's anchor (a geometry with its translation-free
  forces and their errors) and the Hessian model; all None before the first step."""
  positions: np.ndarray | None = None  # (n_atoms, 3) bohr
  forces: np.ndarray | None = None  # (n_atoms, 3) translation-free, at `positions`
  errors: np.ndarray | None = None
  hessian: np.ndarray | None = None  # (3 n_atoms, 3 n_atoms)
  updates: int = 0  # BFGS updates accepted
  skipped: int = 0  # BFGS updates skipped as noise

  def to_json(self) -> dict[str, Any]:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> RelaxState:
    arr = lambda v: None if v is None else np.asarray(v, np.float64)
    return cls(positions=arr(d['positions']), forces=arr(d['forces']),
               errors=arr(d['errors']), hessian=arr(d['hessian']), updates=d['updates'],
               skipped=d['skipped'])


def translation_free(forces: np.ndarray,
                     errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(f, errors of f): the forces (n_atoms, 3) with their sum removed, per Cartesian
  component, in proportion to the variances: f_i = F_i - var_i sum_j F_j / sum_j var_j
  (the closest forces without net force, in the metric of the inverse variances), and
  var(f_i) = var_i - var_i^2 / sum_j var_j (independent F_i)."""
  f = np.asarray(forces, np.float64)
  var = np.maximum(np.asarray(errors, np.float64) ** 2, 1e-30)
  total = var.sum(axis=0)
  return f - var * f.sum(axis=0) / total, np.sqrt(np.maximum(var - var ** 2 / total, 0.0))


def converged(forces: np.ndarray, errors: np.ndarray, sigmas: float = 2.0) -> bool:
  """Every component of the translation-free forces zero within `sigmas` error bars."""
  f, err = translation_free(forces, errors)
  return bool(np.all(np.abs(f) <= sigmas * err))


def done(positions: np.ndarray, forces: np.ndarray, errors: np.ndarray,
         next_positions: np.ndarray, opts: RelaxOptions) -> bool:
  """The relaxation's stopping rule: forces zero within error bars, next step small."""
  move = float(np.max(np.linalg.norm(np.asarray(next_positions) - positions, axis=1)))
  return converged(forces, errors, opts.sigmas) and move <= opts.step_tolerance


def relax_step(state: RelaxState, positions: np.ndarray, forces: np.ndarray,
               errors: np.ndarray, opts: RelaxOptions) -> tuple[RelaxState, np.ndarray]:
  """Takes the forces (and error bars) measured at `positions`; returns the state (the
  secant's anchor and the Hessian model, updated) and the next geometry."""
  x = np.asarray(positions, np.float64)
  f, err = translation_free(forces, errors)
  hessian = (np.eye(x.size) * opts.hessian_guess if state.hessian is None
             else np.array(state.hessian))
  updates, skipped = state.updates, state.skipped
  anchor = RelaxState(positions=x, forces=f, errors=err)
  if state.forces is not None and state.positions is not None:
    s = (x - state.positions).reshape(-1)
    y = (state.forces - f).reshape(-1)
    ys = float(y @ s)
    noise = float(np.sqrt(np.sum(s ** 2 * (err.reshape(-1) ** 2 +
                                           np.asarray(state.errors).reshape(-1) ** 2))))
    if ys > 3.0 * noise and ys > 1e-12:
      bs = hessian @ s
      hessian = hessian + np.outer(y, y) / ys - np.outer(bs, bs) / float(s @ bs)
      updates += 1
    else:  # keep the old anchor: the next secant has a longer baseline
      anchor, skipped = state, skipped + 1
  # B stays positive definite (updates only with y.s > 0); translations keep the guess's
  # curvature, and the step's net translation is removed.
  step = np.linalg.solve(hessian, f.reshape(-1)).reshape(x.shape)
  step -= np.mean(step, axis=0)
  longest = float(np.max(np.linalg.norm(step, axis=1)))
  if longest > opts.trust_radius:
    step *= opts.trust_radius / longest
  return RelaxState(positions=anchor.positions, forces=anchor.forces, errors=anchor.errors,
                    hessian=hessian, updates=updates, skipped=skipped), x + step
