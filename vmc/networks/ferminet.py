"""The FermiNet wavefunction (Pfau et al., Phys. Rev. Research 2, 033429, 2020).

One walker in, (sign, log|psi|) out:

  h_i^0  = [r_i - R_I, |r_i - R_I|]_I          one-electron stream, (n, 4 n_atoms)
  h_ij^0 = [r_i - r_j, |r_i - r_j|]            two-electron stream, (n, n, 4)
  f_i^l  = [h_i, <h_j>_up, <h_j>_down, <h_ij>_{j up}, <h_ij>_{j down}]
  h_i^{l+1} = tanh(W f_i^l + b) (+ h_i^l when widths match), likewise h_ij with V
  psi = exp(J) sum_d det[phi^d(h^L)]              orbitals, envelopes, determinants and
                                                  the optional Jastrow: networks/orbitals.py

Permuting two same-spin electrons permutes the rows of every orbital matrix (all stream
features are permutation-equivariant), so psi changes sign: antisymmetry by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from vmc.networks import orbitals as orbitals_lib

# Names of the stream layers' parameters, which the forward Laplacian reads back
# (ferminet_laplacian.py); the head's are in orbitals.py.
ONE_ELECTRON = 'one_electron_{}'
TWO_ELECTRON = 'two_electron_{}'


def features(x: jnp.ndarray, atoms: jnp.ndarray, soft: tuple[float, ...] = ()
             ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Input features of one walker.

  x: (n * 3,) electron coordinates; atoms: (n_atoms, 3). soft: per nucleus s >= 0 (or
  empty: all zero), r_ae = sqrt(|r - R|^2 + s): s > 0 makes the distance, and every
  function of it, smooth at a nucleus whose pseudopotential leaves psi without a cusp.
  Returns ae (n, n_atoms, 3), r_ae (n, n_atoms), ee (n, n, 3), r_ee (n, n).
  """
  pos = x.reshape(-1, 3)
  n = pos.shape[0]
  ae = pos[:, None, :] - atoms[None, :, :]
  if soft:
    r_ae = jnp.sqrt(jnp.sum(ae ** 2, axis=-1) + jnp.asarray(soft, x.dtype))
  else:
    r_ae = jnp.linalg.norm(ae, axis=-1)
  ee = pos[:, None, :] - pos[None, :, :]
  # |r_i - r_i| = 0 has no gradient; shift the diagonal before the norm, then zero it.
  eye = jnp.eye(n)
  r_ee = jnp.linalg.norm(ee + eye[:, :, None], axis=-1) * (1.0 - eye)
  return ae, r_ae, ee, r_ee


class FermiNet(orbitals_lib.Ansatz):
  """FermiNet for one walker: x (n * 3,) -> (sign, log|psi|)."""
  atoms: tuple[tuple[float, float, float], ...]  # bohr
  nspins: tuple[int, int]
  hidden_dims: Sequence[tuple[int, int]]
  head: orbitals_lib.HeadOptions
  soft: tuple[float, ...] = ()  # per nucleus, bohr^2: see `features` (pseudopotentials)

  def _mean_field(self, h1: jnp.ndarray, h2: jnp.ndarray) -> jnp.ndarray:
    """f_i: own features, spin-resolved means of one- and two-electron features."""
    n_up = self.nspins[0]
    parts = [h1]
    for lo, hi in ((0, n_up), (n_up, h1.shape[0])):
      if hi > lo:
        g = jnp.mean(h1[lo:hi], axis=0, keepdims=True)
        parts.append(jnp.broadcast_to(g, (h1.shape[0], g.shape[1])))
        parts.append(jnp.mean(h2[:, lo:hi], axis=1))
    return jnp.concatenate(parts, axis=-1)

  @nn.compact
  def __call__(self, x: jnp.ndarray, orbitals_only: bool = False,
               atoms: jnp.ndarray | None = None
               ) -> tuple[jnp.ndarray, jnp.ndarray] | list[jnp.ndarray]:
    """(sign, log|psi|), or with orbitals_only the orbital matrices (see `orbitals`).
    `atoms` (n_atoms, 3) replaces the module's nuclear positions (to differentiate psi
    with respect to them)."""
    ae, r_ae, ee, r_ee = features(x, jnp.asarray(self.atoms) if atoms is None else atoms,
                                  self.soft)
    n = r_ae.shape[0]
    h1 = jnp.concatenate([ae, r_ae[..., None]], axis=-1).reshape(n, -1)
    h2 = jnp.concatenate([ee, r_ee[..., None]], axis=-1)
    n_layers = len(self.hidden_dims)
    for layer, (width1, width2) in enumerate(self.hidden_dims):
      f = self._mean_field(h1, h2)
      new_h1 = jnp.tanh(nn.Dense(width1, name=ONE_ELECTRON.format(layer))(f))
      h1 = new_h1 + h1 if new_h1.shape == h1.shape else new_h1
      if layer < n_layers - 1:  # the last two-electron layer would feed nothing
        dense2 = nn.Dense(width2, name=TWO_ELECTRON.format(layer))
        if self.head.states:
          # Pairs as one axis: under the vmap over the K copies, kfac-jax's graph matcher
          # then still sees a repeated dense layer (batch, copy, pair), not a generic one.
          new_h2 = jnp.tanh(dense2(h2.reshape(n * n, -1))).reshape(n, n, -1)
        else:
          new_h2 = jnp.tanh(dense2(h2))
        h2 = new_h2 + h2 if new_h2.shape == h2.shape else new_h2
    return orbitals_lib.wavefunction(h1, x, ae, r_ae, self.nspins, self.head,
                                     orbitals_only)
