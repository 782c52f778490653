"""Wavefunction ansatzes behind one interface, `Network`, each defined once (in
vmc.networks.ops: one code gives psi, and psi with its gradient and Laplacian).

  apply(params, x, atoms=None)   (sign, log|psi|) of one walker x (3N,), the form training
                                 differentiates; `atoms` (n_atoms, 3) moves the nuclei
  evaluate(params, x)            the same values, cheaper (sampling, pseudopotential
                                 ratios; not for differentiating)
  laplacian(params, x)           (lap log|psi|, grad log|psi| (3N,))
  orbitals(params, x)            the orbital matrices (pretraining, inspection)

With K > 0 excited states, `apply` and `evaluate` are those of the total wavefunction
det[psi_i(x^j)] of a walker of K copies of the electrons (vmc.states), and `states` is the
network of one copy, whose functions give the K states' values ((K,), (K, 3N)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
import typing
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vmc import states as states_lib, systems
from vmc.spec import NetworkSpec
from vmc.networks import ferminet, ops, orbitals, psiformer
from vmc.types import Array, LaplacianFn, Params, PRNGKey


class Network(NamedTuple):
  init: Callable[[PRNGKey], Params]
  apply: Callable[..., tuple[Array, Array]]  # (params, x, atoms=None) -> (sign, log|psi|)
  evaluate: Callable[[Params, Array], tuple[Array, Array]]  # apply's values, cheaper
  laplacian: LaplacianFn | None  # (params, x) -> (lap log|psi|, grad log|psi|); None: K > 0
  orbitals: Callable  # (params, x) -> list of (determinants, n_s, n_orbitals)
  states: Network | None = None  # K > 0: the network of one copy of the electrons
  k: int = 0  # this network's values per walker: 0 for one wavefunction, else K states

  def logabs(self, params: Params, x: Array) -> Array:
    """log|psi| of one walker."""
    return self.apply(params, x)[1]

# Nuclei with a pseudopotential: psi has no cusp there (the ECP is finite at r = 0), but
# features and envelopes in |r - R| would give it one, and the kinetic energy a 1/r
# divergence. The networks see sqrt(|r - R|^2 + a^2) instead, a = this (bohr).
ECP_SOFTENING = 0.5


def make_module(system: systems.System, net: NetworkSpec, states: int = 0) -> nn.Module:
  """The flax module of the specified ansatz for `system` (K = states heads if > 0)."""
  atoms = tuple((float(a.coords[0]), float(a.coords[1]), float(a.coords[2]))
                for a in system.atoms)
  nspins = (int(system.electrons[0]), int(system.electrons[1]))
  soft = (tuple(ECP_SOFTENING ** 2 if a.ecp else 0.0 for a in system.atoms)
          if any(a.ecp for a in system.atoms) else ())
  head = orbitals.HeadOptions(
      determinants=net.determinants, full_det=net.full_det, envelope_type=net.envelope_type,
      envelope_shared=net.envelope_shared, bias_orbitals=net.bias_orbitals,
      jastrow=net.jastrow, states=states)
  if net.network_type == 'psiformer':
    return psiformer.Psiformer(atoms=atoms, nspins=nspins, head=head, soft=soft,
                               **dataclasses.asdict(net.psiformer))
  return ferminet.FermiNet(atoms=atoms, nspins=nspins, hidden_dims=net.ferminet.hidden_dims,
                           head=head, soft=soft)


def make_network(system: systems.System, net: NetworkSpec, states: int = 0) -> Network:
  """Builds the specified network for `system` (the spec is read here, not later); with
  states = K > 0 the network of K states (module docstring)."""
  module = make_module(system, net, states)
  x0 = jnp.zeros((system.n_electrons * 3,), jnp.float32)

  def init(key: PRNGKey) -> Params:
    return module.init(key, x0)

  def apply(params: Params, x: Array, atoms: Array | None = None) -> tuple[Array, Array]:
    return typing.cast(tuple[Array, Array], module.apply(params, x, atoms=atoms))

  def carried(params: Params, x: Array) -> tuple[Array, ops.Lap]:
    return typing.cast(tuple[Array, ops.Lap], module.apply(params, ops.seed(x)))

  def evaluate(params: Params, x: Array) -> tuple[Array, Array]:
    sign, logabs = carried(params, x)
    return sign, logabs.v

  def laplacian(params: Params, x: Array) -> tuple[Array, Array]:
    return ops.derivatives(carried(params, x)[1])

  def orbitals_fn(params: Params, x: Array) -> list[Array]:
    return typing.cast(list[Array], module.apply(params, x, method='orbitals'))

  one = Network(init, apply, evaluate, laplacian, orbitals_fn, k=states)
  if not states:
    return one
  return Network(init=init, apply=lambda params, x, atoms=None: states_lib.total(
                     lambda p, y: apply(p, y, atoms), states)(params, x),
                 evaluate=states_lib.total(evaluate, states), laplacian=None,
                 orbitals=orbitals_fn, states=one)


def widest_layer(net: NetworkSpec) -> int:
  """Features per electron of the network's widest layer: the size that its memory in the
  local energy scales with (vmc.hamiltonian.bytes_per_walker)."""
  if net.network_type == 'psiformer':
    p = net.psiformer
    return max(p.num_heads * p.heads_dim, *p.mlp_hidden_dims)
  return max(one for one, _ in net.ferminet.hidden_dims)


def count_parameters(params: Params) -> int:
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
