"""The nucleus-nucleus Coulomb terms: energy and forces of a geometry, once, on the host.

Fixed nuclei (Born-Oppenheimer): these terms depend on the geometry alone, so they are
computed here in float64 and added as constants; the Hamiltonian (vmc.hamiltonian), the
system's description (vmc.systems) and the force estimators (vmc.forces) all take them
from here. Atomic units: hartree, bohr, hartree/bohr.
"""

from __future__ import annotations

import numpy as np


def _pairs(positions: np.ndarray, charges: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
  """(R_a - R_b, |R_a - R_b| with inf on the diagonal, Z_a Z_b), float64."""
  positions = np.asarray(positions, np.float64).reshape(-1, 3)
  charges = np.asarray(charges, np.float64)
  d = positions[:, None, :] - positions[None, :, :]
  r = np.linalg.norm(d, axis=-1)
  np.fill_diagonal(r, np.inf)
  return d, r, charges[:, None] * charges[None, :]


def repulsion(positions: np.ndarray, charges: np.ndarray) -> float:
  """sum_{a<b} Z_a Z_b / |R_a - R_b|, hartree."""
  _, r, zz = _pairs(positions, charges)
  return float(np.sum(zz / r) / 2.0)


def forces(positions: np.ndarray, charges: np.ndarray) -> np.ndarray:
  """(n_atoms, 3) forces -dE_nn/dR_a = sum_b Z_a Z_b (R_a - R_b) / |R_a - R_b|^3."""
  d, r, zz = _pairs(positions, charges)
  return np.sum((zz / r ** 3)[..., None] * d, axis=1)
