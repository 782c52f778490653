"""The all-electron Hamiltonian in atomic units (hartree, bohr).

E_L(x) = -1/2 (lap log|psi| + |grad log|psi||^2) + V(x),
V = -sum_iI Z_I / |r_i - R_I| + sum_{i<j} 1 / |r_i - r_j| + sum_{I<J} Z_I Z_J / |R_I - R_J|.

Everything here acts on one walker x of shape (n_electrons * 3,); vmap over walkers.
"""

from __future__ import annotations

from typing import Callable

import folx
import jax
import jax.numpy as jnp
import numpy as np

from vmc import systems

LogAbsFn = Callable[[jnp.ndarray], jnp.ndarray]  # x (3N,) -> log|psi| scalar


def potential_energy(x: jnp.ndarray, atoms: jnp.ndarray, charges: jnp.ndarray) -> jnp.ndarray:
  """Coulomb energy of one walker: electron-nucleus, electron-electron, nucleus-nucleus."""
  pos = x.reshape(-1, 3)
  n = pos.shape[0]
  r_ae = jnp.linalg.norm(pos[:, None, :] - atoms[None, :, :], axis=-1)
  v = -jnp.sum(charges[None, :] / r_ae)
  if n > 1:
    i, j = np.triu_indices(n, k=1)
    v += jnp.sum(1.0 / jnp.linalg.norm(pos[i] - pos[j], axis=-1))
  if atoms.shape[0] > 1:
    a, b = np.triu_indices(atoms.shape[0], k=1)
    v += jnp.sum(charges[a] * charges[b] / jnp.linalg.norm(atoms[a] - atoms[b], axis=-1))
  return v


def laplacian_loop(f: LogAbsFn, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Exact (lap f, grad f) by a loop of forward-over-reverse passes over the 3N coordinates.

  Each pass is one Hessian-vector product with a unit vector e_i, of which the i-th entry
  is d^2 f / dx_i^2; memory stays that of one gradient.
  """
  grad_f = jax.grad(f)
  n = x.shape[0]
  eye = jnp.eye(n, dtype=x.dtype)

  def body(i, acc):
    _, hess_col = jax.jvp(grad_f, (x,), (eye[i],))
    return acc + hess_col[i]

  lap = jax.lax.fori_loop(0, n, body, jnp.zeros((), x.dtype))
  return lap, grad_f(x)


def laplacian_folx(f: LogAbsFn, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Exact (lap f, grad f) by folx's generic forward Laplacian (one pass over the jaxpr of
  f, Jacobians propagated densely: sparsity tracking is slower here, docs/benchmarks.md)."""
  out = folx.forward_laplacian(f, sparsity_threshold=0)(x)
  return out.laplacian, out.jacobian.dense_array


# 'forward' is the network's own forward Laplacian (vmc/networks/ferminet_laplacian.py);
# networks without one fall back to folx.
METHODS = ('loop', 'forward', 'folx')


def make_local_energy(logabs: Callable, system: systems.System, method: str = 'loop',
                      forward_laplacian: Callable | None = None):
  """Returns local_energy(params, x) -> E_L for one walker.

  logabs(params, x) is log|psi| of one walker; forward_laplacian(params, x), if given, is
  (lap log|psi|, grad log|psi|) and is what method 'forward' uses.
  """
  atoms = jnp.asarray(system.positions, jnp.float32)
  charges = jnp.asarray(system.charges, jnp.float32)
  if method not in METHODS:
    raise ValueError(f'unknown Laplacian method {method!r}; use one of {METHODS}')

  def lap_and_grad(params, x):
    f = lambda y: logabs(params, y)
    if method == 'loop':
      return laplacian_loop(f, x)
    if method == 'forward' and forward_laplacian is not None:
      return forward_laplacian(params, x)
    return laplacian_folx(f, x)

  def local_energy(params, x):
    lap, grad = lap_and_grad(params, x)
    # -1/2 (lap psi) / psi = -1/2 (lap log|psi| + |grad log|psi||^2)
    kinetic = -0.5 * (lap + jnp.sum(grad ** 2))
    return kinetic + potential_energy(x, atoms, charges)

  return local_energy
