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
"""

from __future__ import annotations

from collections.abc import Callable
import typing
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vmc import systems
from vmc.spec import NetworkSpec
from vmc.networks import ferminet, ferminet_laplacian, orbitals, psiformer
from vmc.types import Array, LaplacianFn, Params, PRNGKey


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

  def logabs(self, params: Params, x: Array) -> Array:
    """log|psi| of one walker."""
    return self.apply(params, x)[1]


# Nuclei with a pseudopotential: psi has no cusp there (the ECP is finite at r = 0), but
# features and envelopes in |r - R| would give it one, and the kinetic energy a 1/r
# divergence. The networks see sqrt(|r - R|^2 + a^2) instead, a = this (bohr).
ECP_SOFTENING = 0.5


def make_module(system: systems.System, net: NetworkSpec) -> nn.Module:
  """The flax module of the specified ansatz for `system`."""
  atoms = tuple((float(a.coords[0]), float(a.coords[1]), float(a.coords[2]))
                for a in system.atoms)
  nspins = (int(system.electrons[0]), int(system.electrons[1]))
  soft = (tuple(ECP_SOFTENING ** 2 if a.ecp else 0.0 for a in system.atoms)
          if any(a.ecp for a in system.atoms) else ())
  head = orbitals.HeadOptions(
      determinants=net.determinants, full_det=net.full_det, envelope_type=net.envelope_type,
      envelope_shared=net.envelope_shared, bias_orbitals=net.bias_orbitals,
      jastrow=net.jastrow)
  if net.network_type == 'psiformer':
    p = net.psiformer
    return psiformer.Psiformer(
        atoms=atoms, nspins=nspins, num_layers=p.num_layers, num_heads=p.num_heads,
        heads_dim=p.heads_dim, mlp_hidden_dims=p.mlp_hidden_dims,
        use_layer_norm=p.use_layer_norm, rescale_inputs=p.rescale_inputs, head=head,
        soft=soft)
  return ferminet.FermiNet(atoms=atoms, nspins=nspins, hidden_dims=net.ferminet.hidden_dims,
                           head=head, soft=soft)


def make_network(system: systems.System, net: NetworkSpec) -> Network:
  """Builds the specified network for `system` (the spec is read here, not later)."""
  module = make_module(system, net)
  x0 = jnp.zeros((system.n_electrons * 3,), jnp.float32)

  def init(key: PRNGKey) -> Params:
    return module.init(key, x0)

  def apply(params: Params, x: Array) -> tuple[Array, Array]:
    return typing.cast(tuple[Array, Array], module.apply(params, x))

  def apply_at(params: Params, x: Array, atoms: Array) -> tuple[Array, Array]:
    return typing.cast(tuple[Array, Array], module.apply(params, x, atoms=atoms))

  def orbitals_fn(params: Params, x: Array) -> list[Array]:
    return typing.cast(list[Array], module.apply(params, x, method='orbitals'))

  if not isinstance(module, ferminet.FermiNet):
    # No hand-written forward Laplacian: the Hamiltonian's 'forward' method uses folx.
    return Network(init=init, apply=apply, orbitals=orbitals_fn,
                   sampling_logabs=lambda params, x: apply(params, x)[1],
                   sampling_apply=apply, apply_at=apply_at)

  def laplacian(params: Params, x: Array) -> tuple[Array, Array]:
    return ferminet_laplacian.laplacian(module, params, x)

  def sampling_apply(params: Params, x: Array) -> tuple[Array, Array]:
    return ferminet_laplacian.sign_logabs(module, params, x)

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
