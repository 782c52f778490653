"""Wavefunction ansatzes behind one interface: `Network(init, apply, orbitals, ...)`.

`apply(params, x) -> (sign, log|psi|)` for one walker x of shape (n_electrons * 3,);
vmap it over walkers. `orbitals(params, x)` gives the orbital matrices (for pretraining
and inspection). `sampling_logabs(params, x)` is log|psi| for Metropolis sampling: FermiNet
evaluates it through its cheaper forward-Laplacian code, other networks through `apply`
(the training loss always differentiates `apply`, whose layers kfac-jax recognises).
`laplacian(params, x) -> (lap log|psi|, grad log|psi|)` is the network's own forward
Laplacian (None when it has none; the Hamiltonian then uses folx).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vmc import systems
from vmc.networks import ferminet, ferminet_laplacian, orbitals, psiformer


class Network(NamedTuple):
  init: Callable  # (key) -> params
  apply: Callable  # (params, x) -> (sign, log|psi|)
  orbitals: Callable  # (params, x) -> list of (determinants, n_s, n_orbitals)
  # (params, x) -> log|psi|, equal to logabs (cheaper where it can be); for sampling only.
  sampling_logabs: Callable
  laplacian: Callable | None = None  # (params, x) -> (lap log|psi|, grad log|psi|)

  def logabs(self, params, x):
    """log|psi| of one walker."""
    return self.apply(params, x)[1]


TYPES = ('ferminet', 'psiformer')


def jastrow_type(net: ml_collections.ConfigDict) -> str:
  """network.jastrow with 'default' resolved: simple_ee for the Psiformer, none for FermiNet."""
  if net.jastrow == 'default':
    return 'simple_ee' if net.network_type == 'psiformer' else 'none'
  return net.jastrow


def make_module(system: systems.System, cfg: ml_collections.ConfigDict) -> nn.Module:
  """The flax module of the configured ansatz for `system`."""
  net = cfg.network
  atoms = tuple(tuple(float(c) for c in a.coords) for a in system.atoms)
  head = orbitals.HeadOptions(
      determinants=int(net.determinants), full_det=bool(net.full_det),
      envelope_type=net.envelope_type, envelope_shared=bool(net.envelope_shared),
      bias_orbitals=bool(net.bias_orbitals), jastrow=jastrow_type(net))
  if net.network_type == 'psiformer':
    p = net.psiformer
    return psiformer.Psiformer(
        atoms=atoms, nspins=tuple(system.electrons), num_layers=int(p.num_layers),
        num_heads=int(p.num_heads), heads_dim=int(p.heads_dim),
        mlp_hidden_dims=tuple(int(w) for w in p.mlp_hidden_dims),
        use_layer_norm=bool(p.use_layer_norm), rescale_inputs=bool(p.rescale_inputs),
        head=head)
  return ferminet.FermiNet(
      atoms=atoms, nspins=tuple(system.electrons),
      hidden_dims=tuple(tuple(int(w) for w in d) for d in net.ferminet.hidden_dims),
      head=head)


def make_network(system: systems.System, cfg: ml_collections.ConfigDict) -> Network:
  """Builds the configured network for `system` (config read here, not later)."""
  module = make_module(system, cfg)
  x0 = jnp.zeros((system.n_electrons * 3,), jnp.float32)

  def init(key):
    return module.init(key, x0)

  def apply(params, x):
    return module.apply(params, x)

  def orbitals_fn(params, x):
    return module.apply(params, x, method=type(module).orbitals)

  if not isinstance(module, ferminet.FermiNet):
    # No hand-written forward Laplacian: the Hamiltonian's 'forward' method uses folx.
    return Network(init=init, apply=apply, orbitals=orbitals_fn,
                   sampling_logabs=lambda params, x: apply(params, x)[1])

  def laplacian(params, x):
    return ferminet_laplacian.laplacian(module, params, x)

  def sampling_logabs(params, x):
    return ferminet_laplacian.sign_logabs(module, params, x)[1]

  return Network(init=init, apply=apply, orbitals=orbitals_fn, laplacian=laplacian,
                 sampling_logabs=sampling_logabs)


def count_parameters(params) -> int:
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
