"""The all-electron Hamiltonian in atomic units (hartree, bohr), as a sum of terms.

E_L(x) = (H psi)(x) / psi(x) = T_L(x) + V(x), with
T_L = -1/2 (lap log|psi| + |grad log|psi||^2)   (kinetic_energy)
V   = -sum_iI Z_I / |r_i - R_I| + sum_{i<j} 1 / |r_i - r_j| + sum_{I<J} Z_I Z_J / |R_I - R_J|
                                                  (coulomb_potential)

Every term is an `EnergyTerm` (params, x) -> hartree of one walker x (n_electrons * 3,),
built from the wavefunction (sign, log|psi|) and the system; `make_local_energy` adds them
up. With pseudopotentials the nuclei carry effective charges, the local ECP channel is
one more such term, and the nonlocal one (wavefunction ratios psi(x')/psi(x) on a randomly
rotated quadrature, vmc.pseudopotential) is a batch term that `batched` adds: it takes
the whole batch and an RNG key, so that it evaluates only the electrons near an ECP
nucleus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import folx
import jax
import jax.numpy as jnp
import numpy as np

from vmc import states, systems
from vmc.spec import LAPLACIANS
from vmc.types import (Array, BatchEnergyFn, EnergyTerm, LaplacianFn, LocalEnergyFn, Params,
                       PRNGKey, WavefunctionFn)

ScalarFn = Callable[[Array], Array]  # x (3N,) -> log|psi| of one walker, fixed parameters


def electronic_potential(x: Array, atoms: Array, charges: Array) -> Array:
  """Coulomb energy of the electrons of one walker: electron-nucleus, electron-electron."""
  pos = x.reshape(-1, 3)
  n = pos.shape[0]
  r_ae = jnp.linalg.norm(pos[:, None, :] - atoms[None, :, :], axis=-1)
  v = -jnp.sum(charges[None, :] / r_ae)
  if n > 1:
    i, j = np.triu_indices(n, k=1)
    v += jnp.sum(1.0 / jnp.linalg.norm(pos[i] - pos[j], axis=-1))
  return v


def laplacian_loop(f: ScalarFn, x: Array) -> tuple[Array, Array]:
  """Exact (lap f, grad f) by a loop of forward-over-reverse passes over the 3N coordinates.

  Each pass is one Hessian-vector product with a unit vector e_i, of which the i-th entry
  is d^2 f / dx_i^2; memory stays that of one gradient. f may return a vector (K,) (one
  value per state): then (lap (K,), grad (K, 3N)).
  """
  grad_f = jax.jacrev(f)
  n = x.shape[0]
  eye = jnp.eye(n, dtype=x.dtype)
  out = jax.eval_shape(f, x)

  def body(i: int, acc: Array) -> Array:
    _, hess_col = jax.jvp(grad_f, (x,), (eye[i],))
    return acc + hess_col[..., i]

  lap = jax.lax.fori_loop(0, n, body, jnp.zeros(out.shape, x.dtype))
  return lap, grad_f(x)


def laplacian_folx(f: ScalarFn, x: Array) -> tuple[Array, Array]:
  """Exact (lap f, grad f) by folx's generic forward Laplacian (one pass over the jaxpr of
  f, Jacobians propagated densely: sparsity tracking is slower here, docs/benchmarks.md).
  A vector f (K,) gives (lap (K,), grad (K, 3N))."""
  out = folx.forward_laplacian(f, sparsity_threshold=0)(x)
  return out.laplacian, jnp.moveaxis(out.jacobian.dense_array, 0, -1)


def kinetic_energy(wavefunction: WavefunctionFn, method: str = 'forward',
                   forward_laplacian: LaplacianFn | None = None) -> EnergyTerm:
  """T_L = -1/2 (lap log|psi| + |grad log|psi||^2) = -1/2 (lap psi) / psi.

  method 'forward' uses the network's own forward Laplacian (forward_laplacian(params, x)
  -> (lap log|psi|, grad log|psi|); vmc.networks gives every network one), or folx where
  a wavefunction has none; 'loop' and 'folx' differentiate log|psi| of the wavefunction.
  A wavefunction of K states ((K,) signs and log|psi_i|) gives T_L of each, (K,).
  """
  if method not in LAPLACIANS:
    raise ValueError(f'unknown Laplacian method {method!r}; use one of {LAPLACIANS}')

  def lap_and_grad(params: Params, x: Array) -> tuple[Array, Array]:
    if method == 'forward' and forward_laplacian is not None:
      return forward_laplacian(params, x)
    f = lambda y: wavefunction(params, y)[1]
    return laplacian_loop(f, x) if method == 'loop' else laplacian_folx(f, x)

  def kinetic(params: Params, x: Array) -> Array:
    lap, grad = lap_and_grad(params, x)
    return -0.5 * (lap + jnp.sum(grad ** 2, axis=-1))

  return kinetic


def coulomb_potential(system: systems.System) -> EnergyTerm:
  """V(x): electron-nucleus, electron-electron and nucleus-nucleus Coulomb energy (the
  last a constant of the geometry, vmc.nuclei)."""
  atoms = jnp.asarray(system.positions, jnp.float32)
  charges = jnp.asarray(system.charges, jnp.float32)
  e_nn = system.nuclear_repulsion()

  def potential(params: Params, x: Array) -> Array:
    del params
    v = electronic_potential(x, atoms, charges)
    return v + e_nn if e_nn else v

  return potential


def make_local_energy(wavefunction: WavefunctionFn, system: systems.System,
                      method: str = 'forward', forward_laplacian: LaplacianFn | None = None,
                      extra_terms: Sequence[EnergyTerm] = ()) -> LocalEnergyFn:
  """Returns local_energy(params, x) -> E_L of one walker: the kinetic energy, the Coulomb
  potential and any `extra_terms`, added in that order.

  wavefunction(params, x) -> (sign, log|psi|) of one walker; method and forward_laplacian
  as in `kinetic_energy`. For K states (wavefunction giving (K,) each) E_L is (K,): each
  state's, the potential terms being the same for all.
  """
  terms = (kinetic_energy(wavefunction, method, forward_laplacian),
           coulomb_potential(system), *extra_terms)

  def local_energy(params: Params, x: Array) -> Array:
    total = terms[0](params, x)
    for term in terms[1:]:
      total = total + term(params, x)
    return total

  return local_energy


CPU_BUDGET_BYTES = 2 ** 30  # per CPU device: chunks of a local energy cost no speed there


def bytes_per_walker(n_electrons: int, width: int, laplacian: str) -> float:
  """A rough estimate of one walker's working memory in the local energy: about seven
  float32 arrays of the widest layer's features with their derivatives, 3N of them for
  'forward' and 'folx' (which carry the whole Jacobian), 3 for 'loop' (one Hessian-vector
  product at a time). For N2 with FermiNet's default network it gives 4.2 MB; XLA's
  scratch allocation for N2's unchunked iteration at 256 walkers per device is 1,080 MB."""
  tangents = 3 * n_electrons if laplacian in ('forward', 'folx') else 3
  return 7.0 * 4 * tangents * n_electrons * width


def memory_budget(platform: str, bytes_limit: int | None) -> float:
  """Bytes per device the local energy may take at once: 1 GiB on CPUs (where computing it
  in chunks is as fast: docs/benchmarks.md), half the device's memory on accelerators
  (1 GiB if the device does not say)."""
  if platform == 'cpu' or not bytes_limit:
    return float(CPU_BUDGET_BYTES)
  return 0.5 * bytes_limit


def auto_chunk_size(walkers: int, per_walker: float, budget: float) -> int:
  """Walkers per local-energy chunk: 0 (all at once) when they fit the budget, else the
  largest divisor of `walkers` that does (equal chunks: one compiled body), at least 1."""
  if walkers * per_walker <= budget:
    return 0
  fit = max(1, int(budget // per_walker))
  return max(d for d in range(1, min(fit, walkers) + 1) if walkers % d == 0)


def batched(local_energy: LocalEnergyFn, chunk_size: int = 0,
            batch_terms: Sequence[BatchEnergyFn] = ()) -> BatchEnergyFn:
  """(params, x (batch, 3N), key=None) -> E_L (batch, ...): the per-walker `local_energy`
  of all walkers at once or `chunk_size` at a time (each a scalar, or a (K, K) matrix for
  excited states), plus the `batch_terms` (which draw their random numbers from `key`;
  None: their deterministic form)."""
  if chunk_size <= 0:
    per_walker = jax.vmap(local_energy, in_axes=(None, 0))
  else:
    per_walker = lambda params, x: jax.lax.map(lambda xi: local_energy(params, xi), x,
                                               batch_size=chunk_size)

  def batch_local_energy(params: Params, x: Array, key: PRNGKey | None = None) -> Array:
    total = per_walker(params, x)
    for k, term in enumerate(batch_terms):
      total = total + term(params, x, None if key is None else jax.random.fold_in(key, k))
    return total

  return batch_local_energy


def batched_states(local_energy: LocalEnergyFn, state_apply: WavefunctionFn, k: int,
                   chunk_size: int = 0, batch_terms: Sequence[BatchEnergyFn] = ()
                   ) -> BatchEnergyFn:
  """(params, x (batch, K * 3N), key=None) -> the NES local energy matrices (batch, K, K)
  of walkers of K copies (vmc.states): `batched` over all the copies (local_energy(params,
  x (3N,)) -> (K,) the states' local energies at one copy; the batch terms, e.g. the
  nonlocal ECP, likewise (copies, K)), then E_L = M^-1 (M * e) per walker, M from
  state_apply(params, x (3N,)) -> (signs (K,), log|psi_i| (K,))."""
  per_copy = batched(local_energy, chunk_size, batch_terms)
  state_matrix = jax.vmap(state_apply, in_axes=(None, 0))

  def matrices(params: Params, x: Array, key: PRNGKey | None = None) -> Array:
    b = x.shape[0]
    flat = x.reshape(b * k, -1)
    e = per_copy(params, flat, key).reshape(b, k, k)
    sign, logabs = (a.reshape(b, k, k) for a in state_matrix(params, flat))
    return jax.vmap(states.energy_matrix)(sign, logabs, e)

  return matrices
