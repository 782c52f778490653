"""From per-electron features to log|psi|: the part every ansatz shares.

  phi_k^d(r_i) = (w_k^d . h_i) env_k^d(r_i)          one weight set per spin channel
  psi = exp(J) sum_d det[phi^d]                      dense N x N, or up block x down block

With `states` = K > 0 the head is K heads on the same features: determinants d run over
K x D (state-major), and psi_s = exp(J) sum_{d of state s} det[phi^d], one (sign, log|psi_s|)
per state (the ansatz of natural excited states, vmc.states). Written in vmc.networks.ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from vmc.networks import envelopes, jastrows, ops

# Parameter names of the head.
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


class Features(NamedTuple):
  """Input features of one walker: ae (n, A, 3), r_ae (n, A), ee (n, n, 3), r_ee (n, n)."""
  ae: ops.Value
  r_ae: ops.Value
  ee: ops.Value
  r_ee: ops.Value


def features(x: ops.Value, atoms: jnp.ndarray, soft: tuple[float, ...] = ()) -> Features:
  """Electron-nucleus and electron-electron vectors and distances of one walker: x (3N,)
  or the carrier of ops.seed(x); atoms (A, 3). soft: per nucleus s >= 0 (or empty: all
  zero), r_ae = sqrt(|r - R|^2 + s): s > 0 makes the distance, and every function of it,
  smooth at a nucleus whose pseudopotential leaves psi without a cusp."""
  pos = x if isinstance(x, ops.Lap) else x.reshape(-1, 3)
  n, dtype = ops.shape(pos)[0], ops.dtype(pos)
  ae = ops.add(ops.rowwise(lambda p: p[:, None, :], pos), -atoms[None])
  r2 = ops.sum(ops.square(ae), axis=-1)
  r_ae = ops.sqrt(ops.add(r2, jnp.asarray(soft, dtype)) if soft else r2)
  ee = ops.pair_differences(pos)
  # |r_i - r_i| = 0 has no gradient; shift the diagonal before the norm, then zero it.
  eye = jnp.eye(n, dtype=dtype)
  r_ee = ops.mul(ops.sqrt(ops.sum(ops.square(ops.add(ee, eye[:, :, None])), axis=-1)),
                 1.0 - eye)
  return Features(ae, r_ae, ee, r_ee)


class Linear(nn.Module):
  """u W (+ b) of ops.linear, with flax Dense's parameters ('kernel', 'bias') and
  initialization; u may be a list of parts, concatenated on plain arrays."""
  features: int
  use_bias: bool = True
  flatten: bool = False  # plain arrays: fold the leading axes (kfac-jax's repeated dense)

  @nn.compact
  def __call__(self, u: ops.Value | Sequence[ops.Value]) -> ops.Value:
    parts: list[ops.Value] = list(u) if isinstance(u, (list, tuple)) else [u]  # type: ignore[list-item]
    rows = sum(ops.width(p) for p in parts)
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (rows, self.features))
    bias = (self.param('bias', nn.initializers.zeros_init(), (self.features,))
            if self.use_bias else None)
    return ops.linear(u, kernel, bias, self.flatten)


def orbital_blocks(h: ops.Value, f: Features, nspins: tuple[int, int],
                   opts: HeadOptions) -> list[ops.Value]:
  """Orbital matrices, one per spin channel: (determinants, n_s, n_orbitals).

  h: (n, F) final electron features, up electrons first. Dense determinants: blocks
  (D, n_up, N) and (D, n_down, N), stacked later into N x N.
  """
  n_det = opts.determinants * max(opts.states, 1)  # of all states together
  blocks = []
  for spin, (lo, hi) in enumerate(((0, nspins[0]), (nspins[0], sum(nspins)))):
    if hi == lo:
      continue
    n_orb = sum(nspins) if opts.full_det else hi - lo
    orb = Linear(n_det * n_orb, use_bias=opts.bias_orbitals,
                 name=ORBITALS.format(spin))(ops.rows(h, lo, hi))
    env = envelopes.Envelope(opts.envelope_type, n_orb, n_det, opts.envelope_shared,
                             name=ENVELOPE.format(spin))(ops.rows(f.ae, lo, hi),
                                                          ops.rows(f.r_ae, lo, hi))
    blocks.append(ops.linear_map(  # (n_s, D * m) -> (D, n_s, m)
        lambda o: jnp.transpose(o.reshape(o.shape[0], n_det, -1), (1, 0, 2)),
        ops.mul(orb, env)))
  return blocks


def log_determinants(blocks: list[ops.Value], full_det: bool,
                     states: int = 0) -> tuple[jnp.ndarray, ops.Value]:
  """(sign, log|sum_d det_d|) from the orbital blocks; with states K > 0 one per state,
  (K,) each, the determinants being K x D state-major."""
  if full_det:
    sign, logdet = ops.slogdet(ops.concat(blocks, axis=1))
  else:  # det of the block-diagonal matrix: the product of the blocks'
    sign, logdet = ops.slogdet(blocks[0])
    for block in blocks[1:]:
      s, ld = ops.slogdet(block)
      sign, logdet = sign * s, ops.add(logdet, ld)
  if states:
    sign = jnp.reshape(sign, (states, -1))
    logdet = ops.linear_map(lambda a: a.reshape(states, -1), logdet)
  return ops.logdet_sum(sign, logdet)


class Ansatz(nn.Module):
  """An ansatz: its `streams` (final electron features h (n, F), up electrons first, from
  the input features), then the head every ansatz shares."""
  atoms: tuple[tuple[float, float, float], ...]  # bohr
  nspins: tuple[int, int]
  head: HeadOptions
  soft: tuple[float, ...]  # per nucleus, bohr^2: see `features`

  def streams(self, f: Features) -> ops.Value:
    raise NotImplementedError  # each ansatz's own

  @nn.compact
  def __call__(self, x: ops.Value, orbitals_only: bool = False,
               atoms: jnp.ndarray | None = None
               ) -> tuple[jnp.ndarray, ops.Value] | list[ops.Value]:
    """(sign, log|psi|) of one walker x (3N,) or ops.seed(x); or with orbitals_only the
    orbital matrices. `atoms` (n_atoms, 3) replaces the module's nuclear positions (to
    differentiate psi with respect to them)."""
    f = features(x, jnp.asarray(self.atoms) if atoms is None else atoms, self.soft)
    blocks = orbital_blocks(self.streams(f), f, self.nspins, self.head)
    if orbitals_only:
      return blocks
    sign, logabs = log_determinants(blocks, self.head.full_det, self.head.states)
    if self.head.jastrow == 'simple_ee':
      logabs = ops.add(logabs, jastrows.SimpleEE(self.nspins, name=JASTROW)(f.r_ee))
    return sign, logabs

  def orbitals(self, x: jnp.ndarray) -> list[jnp.ndarray]:
    """Orbital matrices, one per spin channel: (determinants, n_s, n_orbitals)."""
    return self(x, orbitals_only=True)  # type: ignore[return-value]
