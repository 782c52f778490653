"""Wavefunction ansatzes behind one interface: `Network(init, apply, orbitals)`.

`apply(params, x) -> (sign, log|psi|)` for one walker x of shape (n_electrons * 3,);
vmap it over walkers. `orbitals(params, x)` gives the orbital matrices (for pretraining
and inspection). `laplacian(params, x) -> (lap log|psi|, grad log|psi|)` is the network's
own forward Laplacian (None when it has none; the Hamiltonian then uses folx), and
`sampling_logabs` a cheaper evaluation of log|psi| for Metropolis sampling (the training
loss differentiates `apply`, whose layers kfac-jax recognises).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from vmc import systems
from vmc.networks import ferminet, ferminet_laplacian


class Network(NamedTuple):
  init: Callable  # (key) -> params
  apply: Callable  # (params, x) -> (sign, log|psi|)
  orbitals: Callable  # (params, x) -> list of (determinants, n_s, n_orbitals)
  laplacian: Callable | None = None  # (params, x) -> (lap log|psi|, grad log|psi|)
  # (params, x) -> log|psi|, equal to logabs but cheaper; for sampling, not for training.
  sampling_logabs: Callable | None = None

  def logabs(self, params, x):
    """log|psi| of one walker."""
    return self.apply(params, x)[1]


def make_network(system: systems.System, cfg: ml_collections.ConfigDict) -> Network:
  """Builds the configured network for `system` (config read here, not later)."""
  net = cfg.network
  module = ferminet.FermiNet(
      atoms=tuple(tuple(float(c) for c in a.coords) for a in system.atoms),
      nspins=tuple(system.electrons),
      hidden_dims=tuple(tuple(int(w) for w in d) for d in net.ferminet.hidden_dims),
      determinants=int(net.determinants),
      full_det=bool(net.full_det),
      envelope_type=net.envelope_type,
      bias_orbitals=bool(net.bias_orbitals),
  )
  x0 = jnp.zeros((system.n_electrons * 3,), jnp.float32)

  def init(key):
    return module.init(key, x0)

  def apply(params, x):
    return module.apply(params, x)

  def orbitals(params, x):
    return module.apply(params, x, method=ferminet.FermiNet.orbitals)

  def laplacian(params, x):
    return ferminet_laplacian.laplacian(module, params, x)

  def sampling_logabs(params, x):
    return ferminet_laplacian.sign_logabs(module, params, x)[1]

  return Network(init=init, apply=apply, orbitals=orbitals, laplacian=laplacian,
                 sampling_logabs=sampling_logabs)


def count_parameters(params) -> int:
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
