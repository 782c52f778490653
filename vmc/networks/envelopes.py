"""Multiplicative envelopes that make orbitals decay away from the nuclei."""

import flax.linen as nn
import jax.numpy as jnp


class IsotropicEnvelope(nn.Module):
  """env_k(r_i) = sum_I pi_Ik exp(-sigma_Ik |r_i - R_I|), one per orbital k.

  Input r_ae: (n_electrons, n_atoms) electron-nucleus distances.
  Output: (n_electrons, n_orbitals).
  """
  n_orbitals: int

  @nn.compact
  def __call__(self, r_ae: jnp.ndarray) -> jnp.ndarray:
    n_atoms = r_ae.shape[-1]
    pi = self.param('pi', nn.initializers.ones, (n_atoms, self.n_orbitals))
    sigma = self.param('sigma', nn.initializers.ones, (n_atoms, self.n_orbitals))
    return jnp.sum(pi * jnp.exp(-r_ae[:, :, None] * sigma), axis=1)


ENVELOPES = {'isotropic': IsotropicEnvelope}
