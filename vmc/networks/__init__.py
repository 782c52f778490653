"""Wavefunction ansatzes behind one interface: `Network(init, apply, orbitals, ...)`.

`apply(params, x) -> (sign, log|psi|)` for one walker x of shape (n_electrons * 3,);
vmap it over walkers. `orbitals(params, x)` gives the orbital matrices (for pretraining
and inspection). `sampling_logabs(params, x)` is log|psi| for Metropolis sampling: FermiNet
evaluates it through its cheaper forward-Laplacian code, other networks through `apply`
(the training loss always differentiates `apply`, whose layers kfac-jax recognises);
`sampling_apply(params, x) -> (sign, log|psi|)` is the same cheaper path with the sign (for
the wavefunction ratios of pseudopotentials).
`laplacian(params, x) -> (lap log|psi|, grad log|psi|)` is the network's own forward
Laplacian (None when it has none; the Hamiltonian then uses folx).
`apply_at(params, x, atoms)` is `apply` with the nuclei at `atoms` (n_atoms, 3) instead of
the system's: the networks see the nuclei only through electron-nucleus vectors, so this
is psi with the nuclei moved and the parameters kept (forces differentiate it).

With K > 0 excited states (`make_network(..., states=K)`), the network has K heads on
shared features, and `apply` etc. are those of the total wavefunction det[psi_i(x^j)] of a
walker of K copies of the electrons, x (K * n_electrons * 3,) (vmc.states); the per-state
functions of one copy are in `Network.states`, and `orbitals` takes one copy.
"""

from __future__ import annotations

from collections.abc import Callable
import typing
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vmc import states as states_lib, systems
from vmc.spec import NetworkSpec
from vmc.networks import ferminet, ferminet_laplacian, orbitals, psiformer
from vmc.types import Array, LaplacianFn, Params, PRNGKey


class States(NamedTuple):
  """The K states' functions of one copy of the electrons x (n_electrons * 3,)."""
  k: int  # K, the number of states
  apply: Callable[[Params, Array], tuple[Array, Array]]  # -> (signs (K,), log|psi_i| (K,))
  sampling_apply: Callable[[Params, Array], tuple[Array, Array]]  # the same, cheaper path
  laplacian: LaplacianFn | None  # -> (lap log|psi_i| (K,), grad (K, 3N)); None: folx


class Network(NamedTuple):
  init: Callable[[PRNGKey], Params]
  apply: Callable[[Params, Array], tuple[Array, Array]]  # (params, x) -> (sign, log|psi|)
  orbitals: Callable  # (params, x) -> list of (determinants, n_s, n_orbitals)
  # (params, x) -> log|psi|, equal to logabs (cheaper where it can be); for sampling only.
  sampling_logabs: Callable[[Params, Array], Array]
  # (params, x) -> (sign, log|psi|), equal to apply (cheaper where it can be); not for
  # differentiating (kfac-jax must see apply's layers).
  sampling_apply: Callable[[Params, Array], tuple[Array, Array]]
  # (params, x, atoms (n_atoms, 3)) -> (sign, log|psi|) with the nuclei at `atoms`.
  apply_at: Callable[[Params, Array, Array], tuple[Array, Array]]
  laplacian: LaplacianFn | None = None  # (params, x) -> (lap log|psi|, grad log|psi|)
  states: States | None = None  # K > 0 excited states: apply etc. are of det[psi_i(x^j)]

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
    p = net.psiformer
    return psiformer.Psiformer(
        atoms=atoms, nspins=nspins, num_layers=p.num_layers, num_heads=p.num_heads,
        heads_dim=p.heads_dim, mlp_hidden_dims=p.mlp_hidden_dims,
        use_layer_norm=p.use_layer_norm, rescale_inputs=p.rescale_inputs, head=head,
        soft=soft)
  return ferminet.FermiNet(atoms=atoms, nspins=nspins, hidden_dims=net.ferminet.hidden_dims,
                           head=head, soft=soft)


def make_network(system: systems.System, net: NetworkSpec, states: int = 0) -> Network:
  """Builds the specified network for `system` (the spec is read here, not later); with
  states = K > 0 the network of K states (module docstring)."""
  module = make_module(system, net, states)
  x0 = jnp.zeros((system.n_electrons * 3,), jnp.float32)

  def init(key: PRNGKey) -> Params:
    return module.init(key, x0)

  def apply(params: Params, x: Array) -> tuple[Array, Array]:
    return typing.cast(tuple[Array, Array], module.apply(params, x))

  def apply_at(params: Params, x: Array, atoms: Array) -> tuple[Array, Array]:
    return typing.cast(tuple[Array, Array], module.apply(params, x, atoms=atoms))

  def orbitals_fn(params: Params, x: Array) -> list[Array]:
    return typing.cast(list[Array], module.apply(params, x, method='orbitals'))

  sampling_apply: Callable[[Params, Array], tuple[Array, Array]] = apply
  laplacian: LaplacianFn | None = None  # the Hamiltonian's 'forward' method then uses folx
  if isinstance(module, ferminet.FermiNet):
    ferminet_module = module

    def laplacian(params: Params, x: Array) -> tuple[Array, Array]:
      return ferminet_laplacian.laplacian(ferminet_module, params, x)

    def sampling_apply(params: Params, x: Array) -> tuple[Array, Array]:
      return ferminet_laplacian.sign_logabs(ferminet_module, params, x)

  if states:
    total = states_lib.total(apply, states)
    cheap_total = states_lib.total(sampling_apply, states)
    return Network(init=init, apply=total, orbitals=orbitals_fn,
                   sampling_logabs=lambda params, x: cheap_total(params, x)[1],
                   sampling_apply=cheap_total,
                   apply_at=lambda params, x, atoms: states_lib.total(
                       lambda p, y: apply_at(p, y, atoms), states)(params, x),
                   states=States(states, apply, sampling_apply, laplacian))
  return Network(init=init, apply=apply, orbitals=orbitals_fn, laplacian=laplacian,
                 sampling_logabs=lambda params, x: sampling_apply(params, x)[1],
                 sampling_apply=sampling_apply, apply_at=apply_at)


def widest_layer(net: NetworkSpec) -> int:
  """Features per electron of the network's widest layer: the size that its memory in the
  local energy scales with (vmc.hamiltonian.bytes_per_walker)."""
  if net.network_type == 'psiformer':
    p = net.psiformer
    return max(p.num_heads * p.heads_dim, *p.mlp_hidden_dims)
  return max(one for one, _ in net.ferminet.hidden_dims)


def count_parameters(params: Params) -> int:
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
