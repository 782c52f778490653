"""The Psiformer (von Glehn, Spencer & Pfau, "A Self-Attention Ansatz for Ab-initio Quantum
Chemistry", ICLR 2023).

One walker in, (sign, log|psi|) out. Electrons see each other only through self-attention;
there is no two-electron stream, so the network is smooth where electrons meet and the
Jastrow factor (default simple_ee) carries the electron-electron cusp.

  h_i^0 = [f(r_iI), (r_i - R_I) f(r_iI) / r_iI]_I, s_i      f(r) = log(1 + r) (rescaled)
                                                          or f(r) = r; s_i = +1 up, -1 down
  x^0   = W_e h^0                                         (no bias)
  each layer:  x <- x + W_o concat_heads softmax(q k^T / sqrt(d)) v,   then layer norm
               x <- x + MLP(x) (tanh after every layer),                then layer norm
  psi   = exp(J) sum_d det[phi^d(x^L)]                    networks/orbitals.py

Queries, keys and values are bias-free projections of x, attention runs over all
electrons of both spins. Swapping two same-spin electrons permutes rows: antisymmetric.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vmc.networks import ferminet
from vmc.networks import orbitals as orbitals_lib


class Psiformer(orbitals_lib.Ansatz):
  """Psiformer for one walker: x (n * 3,) -> (sign, log|psi|)."""
  atoms: tuple[tuple[float, float, float], ...]  # bohr
  nspins: tuple[int, int]
  num_layers: int
  num_heads: int
  heads_dim: int
  mlp_hidden_dims: Sequence[int]
  use_layer_norm: bool
  rescale_inputs: bool
  head: orbitals_lib.HeadOptions
  soft: tuple[float, ...] = ()  # per nucleus, bohr^2: see ferminet.features

  @nn.nowrap
  def _input_features(self, ae: jnp.ndarray, r_ae: jnp.ndarray) -> jnp.ndarray:
    n = r_ae.shape[0]
    if self.rescale_inputs:
      log_r = jnp.log1p(r_ae)[..., None]
      per_atom = jnp.concatenate([log_r, ae * log_r / r_ae[..., None]], axis=-1)
    else:
      per_atom = jnp.concatenate([r_ae[..., None], ae], axis=-1)
    spin = jnp.concatenate([jnp.ones(self.nspins[0]), -jnp.ones(self.nspins[1])])
    return jnp.concatenate([per_atom.reshape(n, -1), spin[:, None]], axis=-1)

  @nn.nowrap
  def _attention(self, x: jnp.ndarray, layer: int) -> jnp.ndarray:
    n, width = x.shape
    heads, dim = self.num_heads, self.heads_dim
    q, k, v = (nn.Dense(width, use_bias=False, name=f'{name}_{layer}')(x).reshape(n, heads, dim)
               for name in ('query', 'key', 'value'))
    weights = jax.nn.softmax(jnp.einsum('ihd,jhd->hij', q, k) / jnp.sqrt(dim), axis=-1)
    out = jnp.einsum('hij,jhd->ihd', weights, v).reshape(n, width)
    return nn.Dense(width, use_bias=False, name=f'attention_out_{layer}')(out)

  @nn.nowrap
  def _norm(self, x: jnp.ndarray, name: str) -> jnp.ndarray:
    return nn.LayerNorm(epsilon=1e-5, name=name)(x) if self.use_layer_norm else x

  @nn.compact
  def __call__(self, x: jnp.ndarray, orbitals_only: bool = False,
               atoms: jnp.ndarray | None = None
               ) -> tuple[jnp.ndarray, jnp.ndarray] | list[jnp.ndarray]:
    """(sign, log|psi|), or with orbitals_only the orbital matrices (see `orbitals`).
    `atoms` (n_atoms, 3) replaces the module's nuclear positions."""
    ae, r_ae, _, _ = ferminet.features(x, jnp.asarray(self.atoms) if atoms is None else atoms,
                                       self.soft)
    width = self.num_heads * self.heads_dim
    h = nn.Dense(width, use_bias=False, name='embed')(self._input_features(ae, r_ae))
    for layer in range(self.num_layers):
      h = self._norm(h + self._attention(h, layer), f'attention_norm_{layer}')
      m = h
      for i, w in enumerate(tuple(self.mlp_hidden_dims) + (width,)):
        m = jnp.tanh(nn.Dense(w, name=f'mlp_{layer}_{i}')(m))
      h = self._norm(h + m, f'mlp_norm_{layer}')
    return orbitals_lib.wavefunction(h, x, ae, r_ae, self.nspins, self.head,
                                     orbitals_only)
