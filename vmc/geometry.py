"""Nuclear geometries: walkers that follow the nuclei, and a noise-aware relaxation step.

Positions are (n_atoms, 3) arrays in bohr; forces are hartree/bohr.

Warm starts. A wavefunction trained at one geometry is a good start at a nearby one (the
networks see the nuclei only through electron-nucleus vectors), and so are its walkers
once each electron is moved with its nearest nucleus (`move_walkers`).

Relaxation (`RelaxState`, `relax_step`): quasi-Newton (BFGS) on the forces estimated by
VMC, made to live with their noise:
- the step p = B^-1 f (f the forces with their mean removed: no net translation), scaled
  down so that no atom moves further than a trust radius;
- the BFGS update of the Hessian model B from s = x_new - x_old and y = f_old - f_new is
  skipped unless y.s is positive by more than three times its noise (propagated from
  the forces' error bars): a noisy secant would corrupt B;
- converged when every force component is zero within two error bars.
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


@dataclasses.dataclass
class RelaxState:
  """What the next step needs: the last geometry, its forces and the Hessian model
  (all None before the first step)."""
  positions: np.ndarray | None = None  # (n_atoms, 3) bohr
  forces: np.ndarray | None = None  # (n_atoms, 3) at `positions`
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


def converged(forces: np.ndarray, errors: np.ndarray, sigmas: float = 2.0) -> bool:
  """Every component of the (translation-free) forces zero within `sigmas` error bars."""
  f = np.asarray(forces) - np.mean(forces, axis=0)
  return bool(np.all(np.abs(f) < sigmas * np.asarray(errors)))


def relax_step(state: RelaxState, positions: np.ndarray, forces: np.ndarray,
               errors: np.ndarray, opts: RelaxOptions) -> tuple[RelaxState, np.ndarray]:
  """Takes the forces (and error bars) measured at `positions`; returns the state with
  them recorded and the Hessian model updated, and the next geometry."""
  x = np.asarray(positions, np.float64)
  f = np.asarray(forces, np.float64) - np.mean(forces, axis=0)  # no net force
  err = np.asarray(errors, np.float64)
  n = x.size
  hessian = (np.eye(n) * opts.hessian_guess if state.hessian is None
             else np.array(state.hessian))
  updates, skipped = state.updates, state.skipped
  if state.forces is not None and state.positions is not None:
    s = (x - state.positions).reshape(-1)
    y = (state.forces - np.mean(state.forces, axis=0) - f).reshape(-1)
    ys = float(y @ s)
    noise = float(np.sqrt(np.sum(s ** 2 * (err.reshape(-1) ** 2 +
                                           np.asarray(state.errors).reshape(-1) ** 2))))
    if ys > 3.0 * noise and ys > 1e-12:
      bs = hessian @ s
      hessian = hessian + np.outer(y, y) / ys - np.outer(bs, bs) / float(s @ bs)
      updates += 1
    else:
      skipped += 1
  # Newton step on the model, in the space orthogonal to translations (B is singular
  # there once it has learnt that translations cost nothing).
  step = np.linalg.lstsq(hessian, f.reshape(-1), rcond=1e-8)[0].reshape(x.shape)
  step -= np.mean(step, axis=0)
  longest = float(np.max(np.linalg.norm(step, axis=1)))
  if longest > opts.trust_radius:
    step *= opts.trust_radius / longest
  return RelaxState(positions=x, forces=np.asarray(forces, np.float64), errors=err,
                    hessian=hessian, updates=updates, skipped=skipped), x + step
