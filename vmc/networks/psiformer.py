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
Written in vmc.networks.ops; after the first attention, derivatives are dense.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from vmc.networks import ops
from vmc.networks import orbitals as orbitals_lib

Linear = orbitals_lib.Linear


class LayerNorm(nn.Module):
  """Layer normalization over features, as flax's LayerNorm (its parameters and
  arithmetic: (x - mean) * (rsqrt(var + eps) * scale) + bias, var = <x^2> - <x>^2)."""
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: ops.Value) -> ops.Value:
    scale = self.param('scale', nn.initializers.ones, (ops.width(x),))
    bias = self.param('bias', nn.initializers.zeros, (ops.width(x),))
    mean = ops.mean(x, axis=-1, keepdims=True)
    var = ops.sub(ops.mean(ops.square(x), axis=-1, keepdims=True), ops.square(mean))
    return ops.add(ops.mul(ops.sub(x, mean), ops.mul(ops.rsqrt(ops.add(var, self.epsilon)),
                                                     scale)), bias)


class Psiformer(orbitals_lib.Ansatz):
  """Psiformer for one walker: x (n * 3,) -> (sign, log|psi|)."""
  num_layers: int
  num_heads: int
  heads_dim: int
  mlp_hidden_dims: Sequence[int]
  use_layer_norm: bool
  rescale_inputs: bool

  @nn.nowrap
  def _input_features(self, f: orbitals_lib.Features) -> list[ops.Value]:
    n = sum(self.nspins)
    last = lambda u: ops.rowwise(lambda t: t[..., None], u)
    if self.rescale_inputs:
      log_r = last(ops.log1p(f.r_ae))
      per_atom = ops.concat([log_r, ops.div(ops.mul(f.ae, log_r), last(f.r_ae))])
    else:
      per_atom = ops.concat([last(f.r_ae), f.ae])
    spin = jnp.concatenate([jnp.ones(self.nspins[0]), -jnp.ones(self.nspins[1])])
    flat = ops.rowwise(lambda t: t.reshape(n, -1), per_atom)
    return [flat, spin[:, None].astype(ops.dtype(flat))]  # the embedding's inputs

  @nn.nowrap
  def _attention(self, x: ops.Value, layer: int) -> ops.Value:
    n, width = ops.shape(x)
    heads, dim = self.num_heads, self.heads_dim
    q, k, v = (ops.rowwise(lambda t: t.reshape(n, heads, dim),
                           Linear(width, use_bias=False, name=f'{name}_{layer}')(x))
               for name in ('query', 'key', 'value'))
    logits = ops.div(ops.einsum('ihd,jhd->hij', q, k), jnp.sqrt(dim))
    out = ops.einsum('hij,jhd->ihd', ops.softmax(logits), v)
    return Linear(width, use_bias=False, name=f'attention_out_{layer}')(
        ops.rowwise(lambda t: t.reshape(n, width), out))

  @nn.nowrap
  def _norm(self, x: ops.Value, name: str) -> ops.Value:
    return LayerNorm(name=name)(x) if self.use_layer_norm else x

  @nn.nowrap
  def streams(self, f: orbitals_lib.Features) -> ops.Value:
    width = self.num_heads * self.heads_dim
    h = Linear(width, use_bias=False, name='embed')(self._input_features(f))
    for layer in range(self.num_layers):
      h = self._norm(ops.add(h, self._attention(h, layer)), f'attention_norm_{layer}')
      m = h
      for i, w in enumerate(tuple(self.mlp_hidden_dims) + (width,)):
        m = ops.tanh(Linear(w, name=f'mlp_{layer}_{i}')(m))
      h = self._norm(ops.add(h, m), f'mlp_norm_{layer}')
    return h
