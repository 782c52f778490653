"""The FermiNet wavefunction (Pfau et al., Phys. Rev. Research 2, 033429, 2020).

One walker in, (sign, log|psi|) out:

  h_i^0  = [r_i - R_I, |r_i - R_I|]_I          one-electron stream, (n, 4 n_atoms)
  h_ij^0 = [r_i - r_j, |r_i - r_j|]            two-electron stream, (n, n, 4)
  f_i^l  = [h_i, <h_j>_up, <h_ij>_{j up}, <h_j>_down, <h_ij>_{j down}]
  h_i^{l+1} = tanh(W f_i^l + b) (+ h_i^l when widths match), likewise h_ij with V
  psi = exp(J) sum_d det[phi^d(h^L)]              orbitals, envelopes, determinants and
                                                  the optional Jastrow: networks/orbitals.py

Permuting two same-spin electrons permutes the rows of every orbital matrix (all stream
features are permutation-equivariant), so psi changes sign: antisymmetry by construction.
Written in vmc.networks.ops: on ops.seed(x), h_ij carries derivatives in r_i and r_j only,
h_i^0 in r_i only, and each layer's weights for the means <h_j> act once per walker.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from vmc.networks import ops
from vmc.networks import orbitals as orbitals_lib

# Names of the stream layers' parameters; the head's are in orbitals.py.
ONE_ELECTRON = 'one_electron_{}'
TWO_ELECTRON = 'two_electron_{}'


class FermiNet(orbitals_lib.Ansatz):
  """FermiNet for one walker: x (n * 3,) -> (sign, log|psi|)."""
  hidden_dims: Sequence[tuple[int, int]]

  @nn.nowrap
  def streams(self, f: orbitals_lib.Features) -> ops.Value:
    n_up, n = self.nspins[0], sum(self.nspins)
    spins = [(lo, hi) for lo, hi in ((0, n_up), (n_up, n)) if hi > lo]
    last = lambda u: ops.rowwise(lambda t: t[..., None], u)
    h1 = ops.rowwise(lambda t: t.reshape(n, -1), ops.concat([f.ae, last(f.r_ae)]))
    h2 = ops.concat([f.ee, last(f.r_ee)])
    for layer, (width1, width2) in enumerate(self.hidden_dims):
      mean_field = [h1] + [part for lo, hi in spins for part in (ops.mean_rows(h1, lo, hi),
                                                                ops.mean_pairs(h2, lo, hi))]
      new_h1 = ops.tanh(orbitals_lib.Linear(width1, name=ONE_ELECTRON.format(layer))(
          mean_field))
      h1 = ops.add(new_h1, h1) if ops.shape(new_h1) == ops.shape(h1) else new_h1
      if layer < len(self.hidden_dims) - 1:  # the last two-electron layer would feed nothing
        # With K states, pairs as one axis: under the vmap over the K copies, kfac-jax's
        # graph matcher then still sees a repeated dense layer (batch, copy, pair).
        new_h2 = ops.tanh(orbitals_lib.Linear(width2, flatten=bool(self.head.states),
                                              name=TWO_ELECTRON.format(layer))(h2))
        h2 = ops.add(new_h2, h2) if ops.shape(new_h2) == ops.shape(h2) else new_h2
    return h1
