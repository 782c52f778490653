"""Jastrow factors: log|psi| = J(x) + log|sum_d det_d|.

simple_ee (the electron-electron cusp):

  J = sum_{i<j same spin} u(r_ij; 1/4, a_par) + sum_{i<j opposite spins} u(r_ij; 1/2, a_anti)
  u(r; c, a) = -c a^2 / (a + r),   du/dr (0) = c

so psi has the Kato cusp slopes 1/2 (opposite spins) and 1/4 (same spins) at coalescence
if the rest of the wavefunction is smooth there (as in the Psiformer, whose inputs are
electron-nucleus features only). a_par and a_anti are learned, starting at 1.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


# Parameter names of the simple_ee Jastrow (read back by the forward Laplacian).
PARALLEL, ANTIPARALLEL = 'ee_par', 'ee_anti'


def _pair_coefficients(nspins: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Upper-triangle pair indices and, per pair, whether the spins are the same."""
  n = sum(nspins)
  i, j = np.triu_indices(n, k=1)
  same = (i < nspins[0]) == (j < nspins[0])
  return i, j, same


def _u(r: jnp.ndarray, c: jnp.ndarray,
       a: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """u, du/dr, d2u/dr2 of u(r) = -c a^2 / (a + r)."""
  s = 1.0 / (a + r)
  return -c * a * a * s, c * a * a * s * s, -2.0 * c * a * a * s * s * s


def _pair_terms(x: jnp.ndarray, nspins: tuple[int, int], a_par: ArrayLike,
                a_anti: ArrayLike) -> tuple[np.ndarray, np.ndarray, jnp.ndarray, jnp.ndarray,
                                            tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]]:
  i, j, same = _pair_coefficients(nspins)
  pos = x.reshape(-1, 3)
  d = pos[i] - pos[j]  # (P, 3)
  r = jnp.linalg.norm(d, axis=-1)
  c = jnp.where(same, 0.25, 0.5)
  a = jnp.where(same, a_par, a_anti)
  return i, j, d, r, _u(r, c, a)


def simple_ee(x: jnp.ndarray, nspins: tuple[int, int], a_par: ArrayLike,
              a_anti: ArrayLike) -> jnp.ndarray:
  """J of one walker x (3N,)."""
  if sum(nspins) < 2:
    return jnp.zeros((), x.dtype)
  *_, (u, _, _) = _pair_terms(x, nspins, a_par, a_anti)
  return jnp.sum(u)


def simple_ee_derivatives(x: jnp.ndarray, nspins: tuple[int, int], a_par: ArrayLike,
                          a_anti: ArrayLike) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """(J, grad J (3N,), lap J) of one walker.

  For a pair at distance r: grad_i u = u'(r) (r_i - r_j) / r = -grad_j u, and the
  Laplacian over both electrons is 2 (u'' + 2 u' / r).
  """
  n = sum(nspins)
  if n < 2:
    zero = jnp.zeros((), x.dtype)
    return zero, jnp.zeros_like(x), zero
  i, j, d, r, (u, du, d2u) = _pair_terms(x, nspins, a_par, a_anti)
  g = (du / r)[:, None] * d  # (P, 3): grad_i of the pair term
  grad = jnp.zeros((n, 3), x.dtype).at[i].add(g).at[j].add(-g)
  lap = jnp.sum(2.0 * (d2u + 2.0 * du / r))
  return jnp.sum(u), grad.reshape(-1), lap


class SimpleEE(nn.Module):
  """The simple_ee Jastrow J(x) of one walker, with learned a_par and a_anti."""
  nspins: tuple[int, int]

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    a_par = self.param(PARALLEL, nn.initializers.ones, (1,))
    a_anti = self.param(ANTIPARALLEL, nn.initializers.ones, (1,))
    return simple_ee(x, self.nspins, a_par[0], a_anti[0])
