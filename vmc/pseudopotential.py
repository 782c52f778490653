"""Effective core potentials: ccECP from PySCF's tables, as two Hamiltonian terms.

A semilocal ECP replaces the `core` innermost electrons of an atom: the nucleus keeps the
effective charge Z - core (in the Coulomb potential, vmc.hamiltonian), and every valence
electron i at r = |r_i - R_I| feels

  V_loc(r) + sum_l v_l(r) sum_m |lm><lm|,     v(r) = sum_k c_k r^(n_k - 2) exp(-a_k r^2),

with the radial channels stored as PySCF stores them (`pyscf.gto.basis.load_ecp`: l = -1
is the local channel, then l = 0, 1, ...; entry n of a channel lists the (a_k, c_k) of
r^(n - 2)). The local part is a function of r alone (`local_term`). The projector acts
on psi through an angular integral over the sphere of radius r around the nucleus:

  (V_NL psi)/psi = sum_l v_l(r) (2l + 1) \\int dW/(4 pi) P_l(cos t) psi(.., r_i', ..)/psi(..)

with r_i' = R_I + r W and cos t = W . (r_i - R_I)/r. The integral is a quadrature rule on
the sphere (`QUADRATURES`: points with weights summing to one, exact for spherical
harmonics up to its degree), turned by a uniformly random rotation for every electron
and call, so that the estimate is unbiased for any psi (`nonlocal_term`). Electrons
farther than the cutoff of every ECP nucleus (where sum_l (2l + 1) |v_l| < 1e-6 Ha) skip
the integral: only the pairs inside are evaluated, in chunks of a fixed size, in a loop
whose trip count is the number of pairs inside over the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vmc import systems
from vmc.ecp_tables import load
from vmc.errors import ConfigError
from vmc.spec import QUADRATURES
from vmc.types import Array, BatchEnergyFn, EnergyTerm, Params, PRNGKey

def _radial(channel: Array, r: Array) -> Array:
  """sum_k c_k r^(n_k - 2) exp(-a_k r^2): channel (..., T, 3) padded with zero terms and r
  (...) broadcast against each other."""
  n, a, c = channel[..., 0], channel[..., 1], channel[..., 2]
  return jnp.sum(c * r[..., None] ** (n - 2) * jnp.exp(-a * r[..., None] ** 2), axis=-1)


def _padded(channels: list[np.ndarray]) -> np.ndarray:
  """(len(channels), T_max, 3), missing terms as (n=2, a=0, c=0)."""
  t = max([len(ch) for ch in channels] + [1])
  out = np.tile(np.array([2.0, 0.0, 0.0]), (len(channels), t, 1))
  for i, ch in enumerate(channels):
    out[i, :len(ch)] = ch
  return out


# ----------------------------------------------------------------------------------------
# Quadrature on the unit sphere.


def _unit(v: np.ndarray) -> np.ndarray:
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _cyclic(triples: list[tuple[float, float, float]]) -> np.ndarray:
  pts = []
  for a, b, c in triples:
    pts += [(a, b, c), (c, a, b), (b, c, a)]
  return np.unique(np.array(pts), axis=0)


def _signs(base: tuple[float, float, float]) -> list[tuple[float, float, float]]:
  out = set()
  for sx in (1, -1):
    for sy in (1, -1):
      for sz in (1, -1):
        out.add((sx * base[0], sy * base[1], sz * base[2]))
  return sorted(out)


def _icosahedron() -> np.ndarray:
  phi = (1 + math.sqrt(5)) / 2
  return _unit(_cyclic(_signs((0.0, 1.0, phi))))  # 12 vertices


def _dodecahedron() -> np.ndarray:
  phi = (1 + math.sqrt(5)) / 2
  cube = np.array(_signs((1.0, 1.0, 1.0)))
  # The duals of the faces of _icosahedron(): (+-1, +-1, +-1) and (0, +-phi, +-1/phi) cyclic.
  return _unit(np.concatenate([cube, _cyclic(_signs((0.0, phi, 1 / phi)))]))  # 20


def quadrature(name: str) -> tuple[np.ndarray, np.ndarray, int]:
  """The rule `name` of QUADRATURES: (points (K, 3), weights (K,) summing to 1, degree of
  exactness)."""
  if name == 'octahedron':
    pts = np.concatenate([np.eye(3), -np.eye(3)])
    return pts, np.full(6, 1 / 6), 3
  if name == 'icosahedron':
    return _icosahedron(), np.full(12, 1 / 12), 5
  if name == 'icosahedron32':  # vertices and face centres of the icosahedron
    pts = np.concatenate([_icosahedron(), _dodecahedron()])
    return pts, np.concatenate([np.full(12, 25 / 840), np.full(20, 27 / 840)]), 9
  raise ConfigError(f'system.pp.quadrature={name!r} is not known; use one of '
                    f'{QUADRATURES}')




def random_rotations(key: PRNGKey, shape: tuple[int, ...]) -> Array:
  """Uniformly distributed rotation matrices (*shape, 3, 3), from unit quaternions."""
  q = jax.random.normal(key, (*shape, 4), jnp.float32)
  w, x, y, z = jnp.moveaxis(q / jnp.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
  rows = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
          [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
          [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
  return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def legendre(l_max: int, t: Array) -> Array:
  """(P_0(t), ..., P_lmax(t)) stacked on a new last axis."""
  p = [jnp.ones_like(t), t]
  for n in range(1, l_max):
    p.append(((2 * n + 1) * t * p[n] - n * p[n - 1]) / (n + 1))
  return jnp.stack(p[:l_max + 1], axis=-1)


# ----------------------------------------------------------------------------------------
# The Hamiltonian terms.


def ecp_atoms(system: systems.System) -> list[int]:
  """Indices of the atoms that carry a pseudopotential."""
  return [i for i, a in enumerate(system.atoms) if a.ecp]


def nonlocal_atoms(system: systems.System) -> list[int]:
  """Indices of the ECP atoms whose pseudopotential has nonlocal channels (the ccECPs of H
  and He are local only: a softened Coulomb potential)."""
  return [i for i in ecp_atoms(system)
          if load(system.pseudopotential, system.atoms[i].symbol).l_max >= 0]


def local_term(system: systems.System) -> EnergyTerm:
  """sum over electrons and ECP nuclei of the local channel V_loc(|r_i - R_I|)."""
  idx = ecp_atoms(system)
  centres = jnp.asarray(system.positions[idx], jnp.float32)
  channels = jnp.asarray(_padded([load(system.pseudopotential, system.atoms[i].symbol).local
                                  for i in idx]), jnp.float32)

  def local(params: Params, x: Array) -> Array:
    del params
    r = jnp.linalg.norm(x.reshape(-1, 1, 3) - centres[None], axis=-1)  # (n, A)
    return jnp.sum(_radial(channels, r))  # channels (A, T, 3) against r (n, A)

  return local


def nonlocal_term(wavefunction: Callable, system: systems.System, rule: str = 'icosahedron',
                  chunk_size: int = 0) -> BatchEnergyFn:
  """term(params, x (B, 3N), key) -> (B,) the nonlocal ECP energy of each walker.

  wavefunction(params, x) -> (sign, log|psi|) of one walker; a wavefunction of S excited
  states ((S,) each) gives each state's nonlocal energy, (B, S). key None: the quadrature
  points unrotated (deterministic, for tests); else one random rotation per electron.
  chunk_size: electron-nucleus pairs per chunk (0: the batch size). Needs an atom with
  nonlocal channels (nonlocal_atoms).
  """
  idx = nonlocal_atoms(system)
  if not idx:
    raise ValueError('no atom with nonlocal ECP channels: there is no nonlocal term')
  ecps = [load(system.pseudopotential, system.atoms[i].symbol) for i in idx]
  l_max = max(e.l_max for e in ecps)
  centres = jnp.asarray(system.positions[idx], jnp.float32)  # (A, 3)
  channels = jnp.asarray(np.stack([_padded(
      [e.nonlocal_channels[ang] if ang <= e.l_max else np.zeros((0, 3))
       for ang in range(l_max + 1)])
      for e in ecps]), jnp.float32)  # (A, L, T, 3)
  cutoffs = jnp.asarray([e.cutoff() for e in ecps], jnp.float32)
  points, weights, _ = quadrature(rule)
  points_j, weights_j = jnp.asarray(points, jnp.float32), jnp.asarray(weights, jnp.float32)
  two_l1 = jnp.arange(l_max + 1, dtype=jnp.float32) * 2 + 1
  n_el, n_atoms = system.n_electrons, len(idx)
  walker = jax.vmap(wavefunction, in_axes=(None, 0))
  at_points = jax.vmap(walker, in_axes=(None, 0))

  def term(params: Params, x: Array, key: PRNGKey | None = None) -> Array:
    batch = x.shape[0]
    pos = x.reshape(batch, n_el, 3)
    d = pos[:, :, None, :] - centres  # (B, N, A, 3)
    r = jnp.linalg.norm(d, axis=-1)
    inside = (r < cutoffs).reshape(-1)
    n_inside = jnp.sum(inside)
    chunk = chunk_size if chunk_size > 0 else batch
    pairs = inside.shape[0]
    padded = -(-pairs // chunk) * chunk
    # Pairs inside the cutoff first, in their original order.
    order = jnp.argsort(~inside, stable=True)
    order = jnp.concatenate([order, jnp.zeros(padded - pairs, order.dtype)])
    if key is None:
      rot = jnp.broadcast_to(jnp.eye(3, dtype=x.dtype), (batch, n_el, 3, 3))
    else:
      rot = random_rotations(key, (batch, n_el))
    sign0, log0 = walker(params, x)

    def one_chunk(j: Array, acc: Array) -> Array:
      ids = jax.lax.dynamic_slice(order, (j * chunk,), (chunk,))
      valid = j * chunk + jnp.arange(chunk) < n_inside
      b, rest = jnp.divmod(ids, n_el * n_atoms)
      i, a = jnp.divmod(rest, n_atoms)
      dist = r[b, i, a]
      unit = d[b, i, a] / jnp.where(dist > 0, dist, 1.0)[:, None]
      q = jnp.einsum('kj,cij->cki', points_j, rot[b, i])  # rotated points (C, K, 3)
      moved = centres[a][:, None, :] + dist[:, None, None] * q
      mine = (jnp.arange(n_el) == i[:, None])[:, None, :, None]  # (C, 1, N, 1)
      configs = jnp.where(mine, moved[:, :, None, :], pos[b][:, None])  # (C, K, N, 3)
      sign, log = at_points(params, configs.reshape(chunk, -1, n_el * 3))
      # (C, K) quadrature points, or (C, K, S) for S excited states
      ratio = sign * sign0[b][:, None] * jnp.exp(log - log0[b][:, None])
      cos = jnp.einsum('cki,ci->ck', q, unit)
      proj = jnp.einsum('k,ckl,ck...->cl...', weights_j, legendre(l_max, cos), ratio)
      v = _radial(channels[a], dist[:, None])  # (C, L)
      value = jnp.einsum('l,cl,cl...->c...', two_l1, v, proj)
      keep = valid.reshape(valid.shape + (1,) * (value.ndim - 1))
      return acc.at[b].add(jnp.where(keep, value, 0.0))

    n_chunks = (n_inside + chunk - 1) // chunk
    return jax.lax.fori_loop(0, n_chunks, one_chunk, jnp.zeros(log0.shape, x.dtype))

  return term
