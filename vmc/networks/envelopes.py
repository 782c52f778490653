"""Multiplicative envelopes that make orbitals decay away from the nuclei.

For electron i, nucleus I and orbital column k:

  isotropic:  env_ik = sum_I pi_Ik exp(-sigma_Ik |r_i - R_I|)
  diagonal:   env_ik = sum_I pi_Ik exp(-|sigma_I:k * (r_i - R_I)|)   (one decay per axis)

Columns k run over determinants x orbitals (each determinant its own envelope), or over
orbitals only when `shared` (one envelope per orbital, the same in every determinant; the
values are then tiled over determinants). Parameters start at one, as in FermiNet.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vmc.networks import ops


class Envelope(nn.Module):
  """(n_s, determinants * n_orbitals) envelope values for one spin channel's electrons,
  from their ae (n_s, A, 3) and r_ae (n_s, A)."""
  kind: str
  n_orbitals: int
  determinants: int
  shared: bool = False

  @nn.compact
  def __call__(self, ae: ops.Value, r_ae: ops.Value) -> ops.Value:
    n_atoms = ops.shape(r_ae)[-1]
    k = self.n_orbitals * (1 if self.shared else self.determinants)
    pi = self.param('pi', nn.initializers.ones, (n_atoms, k))
    shape = (n_atoms, k) if self.kind == 'isotropic' else (n_atoms, 3, k)
    sigma = self.param('sigma', nn.initializers.ones, shape)
    if self.kind == 'isotropic':  # y_iIk, the argument of the exponential
      y = ops.mul(ops.rowwise(lambda r: r[:, :, None], r_ae), sigma)
    else:
      scaled = ops.mul(ops.rowwise(lambda a: a[:, :, :, None], ae), sigma)
      y = ops.sqrt(ops.sum(ops.square(scaled), axis=2))
    env = ops.sum(ops.mul(ops.exp(ops.mul(y, -1.0)), pi), axis=1)
    if not self.shared:
      return env
    # (n, K) -> (n, determinants * K), K fastest (the orbital layout of the networks)
    return ops.rowwise(lambda e: jnp.tile(e, (1, self.determinants)), env)
