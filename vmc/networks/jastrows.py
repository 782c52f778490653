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

from vmc.networks import ops

PARALLEL, ANTIPARALLEL = 'ee_par', 'ee_anti'  # the parameters' names


class SimpleEE(nn.Module):
  """The simple_ee Jastrow J of one walker from its pair distances r_ee (n, n)."""
  nspins: tuple[int, int]

  @nn.compact
  def __call__(self, r_ee: ops.Value) -> ops.Value:
    a_par = self.param(PARALLEL, nn.initializers.ones, (1,))
    a_anti = self.param(ANTIPARALLEL, nn.initializers.ones, (1,))
    spin = np.arange(sum(self.nspins)) < self.nspins[0]
    same = spin[:, None] == spin[None, :]
    c = np.where(same, 0.25, 0.5)
    a = jnp.where(same, a_par[0], a_anti[0])
    u = ops.mul(ops.reciprocal(ops.add(r_ee, a)), -c * a * a)
    return ops.sum_pairs(u, np.triu(np.ones_like(c), k=1))  # each pair i < j once
