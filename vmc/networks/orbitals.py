"""From per-electron features to log|psi|: the part every ansatz shares.

  phi_k^d(r_i) = (w_k^d . h_i) env_k^d(r_i)          one weight set per spin channel
  psi = exp(J) sum_d det[phi^d]                      dense N x N, or up block x down block

With `states` = K > 0 the head is K heads on the same features: determinants d run over
K x D (state-major), and psi_s = exp(J) sum_{d of state s} det[phi^d], one (sign, log|psi_s|)
per state (the ansatz of natural excited states, vmc.states).

`orbital_blocks` and `jastrow` create their parameters in the calling module's scope
(call them from inside a compact method), under the names below (ORBITALS, ENVELOPE,
JASTROW), which the forward Laplacian reads back.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp
from jax.typing import ArrayLike

from vmc.networks import envelopes, jastrows

# Parameter names of the head, which the forward Laplacian reads back.
ORBITALS = 'orbitals_{}'
ENVELOPE = 'envelope_{}'
JASTROW = 'jastrow'


class HeadOptions(NamedTuple):
  """How features become orbitals and log|psi| (shared by FermiNet and Psiformer)."""
  determinants: int
  full_det: bool = True
  envelope_type: str = 'isotropic'
  envelope_shared: bool = False
  bias_orbitals: bool = False
  jastrow: str = 'none'
  states: int = 0  # 0: one wavefunction; K > 0: K of them, (K,) signs and log|psi|

  @property
  def all_determinants(self) -> int:
    """Determinants of all states together (the orbital layer's count)."""
    return self.determinants * max(self.states, 1)


def logdet_sum(signs: ArrayLike, logdets: ArrayLike) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(sign, log|sum_d sign_d exp(logdet_d)|) over the last axis, stable in log domain."""
  shift = jnp.max(logdets, axis=-1, keepdims=True)
  total = jnp.sum(signs * jnp.exp(logdets - shift), axis=-1)
  return jnp.sign(total), jnp.log(jnp.abs(total)) + shift[..., 0]


def orbital_blocks(h: jnp.ndarray, ae: jnp.ndarray, r_ae: jnp.ndarray,
                   nspins: tuple[int, int], opts: HeadOptions) -> list[jnp.ndarray]:
  """Orbital matrices, one per spin channel: (determinants, n_s, n_orbitals).

  h: (n, F) final electron features, up electrons first; ae (n, A, 3), r_ae (n, A).
  Dense determinants: blocks (D, n_up, N) and (D, n_down, N), stacked later into N x N.
  """
  n_electrons = sum(nspins)
  blocks = []
  start = 0
  for spin, n_s in enumerate(nspins):
    if n_s == 0:
      continue
    n_orb = n_electrons if opts.full_det else n_s
    own = slice(start, start + n_s)
    n_det = opts.all_determinants
    orb = nn.Dense(n_det * n_orb, use_bias=opts.bias_orbitals,
                   name=ORBITALS.format(spin))(h[own])
    env = envelopes.Envelope(opts.envelope_type, n_orb, n_det,
                             opts.envelope_shared, name=ENVELOPE.format(spin))(ae[own], r_ae[own])
    orb = (orb * env).reshape(n_s, n_det, n_orb)
    blocks.append(jnp.transpose(orb, (1, 0, 2)))
    start += n_s
  return blocks


def log_determinants(blocks: list[jnp.ndarray], full_det: bool,
                     states: int = 0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(sign, log|sum_d det_d|) from the orbital blocks; with states K > 0 one per state,
  (K,) each, the determinants being K x D state-major."""
  sign: jnp.ndarray | float
  logdet: jnp.ndarray | float
  if full_det:
    sign, logdet = jnp.linalg.slogdet(jnp.concatenate(blocks, axis=1))
  else:
    sign, logdet = 1.0, 0.0
    for block in blocks:
      s, ld = jnp.linalg.slogdet(block)
      sign, logdet = sign * s, logdet + ld
  if states:
    shape = (states, -1)
    return logdet_sum(jnp.reshape(sign, shape), jnp.reshape(logdet, shape))
  return logdet_sum(sign, logdet)


def jastrow(x: jnp.ndarray, nspins: tuple[int, int], kind: str) -> jnp.ndarray:
  """J(x) of one walker (0 for 'none')."""
  if kind == 'none':
    return jnp.zeros((), x.dtype)
  return jastrows.SimpleEE(nspins, name=JASTROW)(x)


def wavefunction(h: jnp.ndarray, x: jnp.ndarray, ae: jnp.ndarray, r_ae: jnp.ndarray,
                 nspins: tuple[int, int], opts: HeadOptions,
                 orbitals_only: bool) -> tuple[jnp.ndarray, jnp.ndarray] | list[jnp.ndarray]:
  """(sign, log|psi|) of one walker from its final electron features h (n, F) ((K,) each
  with opts.states = K), or with orbitals_only the orbital blocks. Call from the ansatz's
  compact __call__."""
  blocks = orbital_blocks(h, ae, r_ae, nspins, opts)
  if orbitals_only:
    return blocks
  sign, logabs = log_determinants(blocks, opts.full_det, opts.states)
  return sign, logabs + jastrow(x, nspins, opts.jastrow)


class Ansatz(nn.Module):
  """Base of the ansatzes: __call__(x, orbitals_only=False) gives (sign, log|psi|)."""

  def orbitals(self, x: jnp.ndarray) -> list[jnp.ndarray]:
    """Orbital matrices, one per spin channel: (determinants, n_s, n_orbitals)."""
    return self(x, orbitals_only=True)
