"""One VMC iteration, composed from its parts, and the model a spec builds.

  network    psi_theta: (sign, log|psi|) of one walker           vmc.networks
  sampler    Metropolis moves of the walkers under |psi|^2         vmc.mcmc
  objective  local energies, clipping, the VMC gradient            vmc.loss, vmc.hamiltonian
  optimizer  the parameter update (kfac, spring, ...)              vmc.optimizers
             or none: an evaluation, parameters frozen                `frozen` here

An iteration on state (params, opt_state, walkers, key, step):

  key, k_moves, k_update = split(key)
  walkers, pmove = sampler.step(params, walkers, k_moves, step)
  params', opt_state', stats = optimizer.update(params, opt_state, k_update, walkers, step)
  keep the new params, opt_state and walkers if the energy and params' are finite on
  every device, else roll them back to the previous iteration's (the NaN guard); step + 1

Everything runs on all local devices at once (vmc.parallel), as one compiled call per
iteration (the previous state donated: the guard's fallback lives inside the call).
"""

from __future__ import annotations

from typing import NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vmc import hamiltonian, loss, mcmc, networks, optimizers, parallel, pseudopotential
from vmc.config import Spec
from vmc.types import (Array, MCMCState, Objective, Optimizer, OptState, Params, PRNGKey,
                       Sampler, StepStats, TrainState, UpdateStats)


class Iteration(NamedTuple):
  """Host-level functions over states with a leading device axis."""
  init_opt_state: Callable[[TrainState], OptState]  # for the state's params and walkers
  step: Callable[[TrainState], tuple[TrainState, StepStats]]
  burn_in: Callable[[TrainState, int], TrainState]  # n sampling iterations, width adapted


class Model(NamedTuple):
  """What a spec builds before any state."""
  network: networks.Network
  sampler: Sampler
  objective: Objective
  optimizer: Optimizer
  iteration: Iteration


def _all_finite(tree: object) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(a.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def guard(candidate: TrainState, previous: TrainState,
          energy: jax.Array) -> tuple[TrainState, jax.Array]:
  """Keeps `candidate` if its energy and parameters are finite (on every device), else
  rolls parameters, optimizer state and walkers (with move width) back to `previous`. The
  key and step advance either way, so a retry samples afresh. Returns (state, rejected)."""
  ok = jnp.isfinite(energy) & _all_finite(candidate.params)
  ok = parallel.pmean(ok.astype(jnp.float32)) == 1.0
  pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
  state = candidate._replace(
      params=pick(candidate.params, previous.params),
      opt_state=pick(candidate.opt_state, previous.opt_state),
      mcmc=pick(candidate.mcmc, previous.mcmc))
  return state, 1.0 - ok.astype(jnp.float32)


def make_iteration(sampler: Sampler, optimizer: Optimizer) -> Iteration:
  """Composes sampling, the optimizer's update and the NaN guard into one iteration."""

  def one_device(previous: TrainState) -> tuple[TrainState, StepStats]:
    key, k_moves, k_update = jax.random.split(previous.key, 3)
    walkers, pmove = sampler.step(previous.params, previous.mcmc, k_moves, previous.step)
    params, opt_state, update = optimizer.update(previous.params, previous.opt_state,
                                                 k_update, walkers.x, previous.step)
    candidate = previous._replace(params=params, opt_state=opt_state, mcmc=walkers, key=key,
                                  step=previous.step + 1)
    state, rejected = guard(candidate, previous, update.energy)
    return state, StepStats(energy=update.energy, variance=update.variance, pmove=pmove,
                            width=previous.mcmc.width, learning_rate=update.learning_rate,
                            rejected=rejected, energy_matrix=update.energy_matrix)

  def burn_in(state: TrainState, n: int) -> TrainState:
    walkers, key = sampler.burn_in(state.params, state.mcmc, state.key, n)
    return state._replace(mcmc=walkers, key=key)

  fold = parallel.pmap(lambda k: jax.random.fold_in(k, 1))
  init = parallel.pmap(optimizer.init)

  def init_opt_state(state: TrainState) -> OptState:
    return init(state.params, fold(state.key), state.mcmc.x)

  return Iteration(init_opt_state=init_opt_state,
                   step=parallel.pmap(one_device, donate_argnums=0),
                   burn_in=parallel.pmap(burn_in, static_broadcasted_argnums=1,
                                         donate_argnums=0))


def frozen(objective: Objective) -> Optimizer:
  """The update of an evaluation (optim.optimizer='none'): the parameters stay, the energy
  of the new walkers is measured (and guarded as in training)."""

  def init(params: Params, key: PRNGKey, x: Array) -> OptState:
    del params, key, x
    return jnp.zeros(())

  def update(params: Params, opt_state: OptState, key: PRNGKey, x: Array,
             step: Array) -> tuple[Params, OptState, UpdateStats]:
    del step
    energy, aux = objective.loss(params, key, x)
    return params, opt_state, UpdateStats(energy, aux.variance, jnp.zeros_like(energy),
                                          aux.energy_matrix)

  return Optimizer(init=init, update=update)


def local_energy_chunk(spec: Spec) -> tuple[int, str]:
  """(walkers per local-energy chunk, 0 for all at once; a line for the log).

  optim.local_energy_chunk_size > 0 is taken as given; 0 chooses from the estimated memory
  of all the device's walkers at once (hamiltonian.bytes_per_walker) against the device's
  budget (hamiltonian.memory_budget): all at once when they fit, else equal chunks that do.
  """
  walkers = spec.batch_size // parallel.global_device_count()
  if spec.optim.local_energy_chunk_size > 0:
    chunk = spec.optim.local_energy_chunk_size
    return chunk, f'{min(chunk, walkers)} of {walkers} walkers per device at a time (config)'
  per_walker = hamiltonian.bytes_per_walker(spec.system.n_electrons,
                                            networks.widest_layer(spec.network),
                                            spec.optim.laplacian)
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  budget = hamiltonian.memory_budget(device.platform, stats.get('bytes_limit'))
  chunk = hamiltonian.auto_chunk_size(walkers, per_walker, budget)
  needs = f'estimated {walkers * per_walker / 2 ** 20:.0f} MiB for all, budget ' \
          f'{budget / 2 ** 20:.0f} MiB'
  if chunk == 0:
    return 0, f'all {walkers} walkers per device at once ({needs})'
  return chunk, f'{chunk} of {walkers} walkers per device at a time ({needs})'


def build(spec: Spec) -> Model:
  """Network, sampler, objective, optimizer and the composed iteration of a spec."""
  network = networks.make_network(spec.system, spec.network, spec.states)
  batch_logabs = jax.vmap(network.logabs, in_axes=(None, 0))
  s = network.states
  ecp, nonlocal_terms = [], []
  if spec.pp is not None:  # the effective charges are in spec.system already
    ecp = [pseudopotential.local_term(spec.system)]
    # The wavefunction ratios go through the network's cheaper forward path (each state's
    # at each copy for excited states).
    ratios = network.evaluate if s is None else s.evaluate
    nonlocal_terms = [pseudopotential.nonlocal_term(ratios, spec.system, spec.pp.quadrature)
                      ] if pseudopotential.nonlocal_atoms(spec.system) else []
  if s is None:
    local_energy = hamiltonian.make_local_energy(network.apply, spec.system,
                                                 spec.optim.laplacian, network.laplacian, ecp)
    batch_local_energy = hamiltonian.batched(local_energy, local_energy_chunk(spec)[0],
                                             nonlocal_terms)
  else:  # K states' local energies at each copy, then the energy matrices (vmc.states)
    batch_local_energy = hamiltonian.batched_states(
        hamiltonian.make_local_energy(s.apply, spec.system, spec.optim.laplacian, s.laplacian,
                                      ecp), s.evaluate, s.k,
        local_energy_chunk(spec)[0] * s.k, nonlocal_terms)
  objective = loss.make_objective(batch_logabs, batch_local_energy,
                                  spec.optim.clip_local_energy)
  # The sampler evaluates the same log|psi| through the network's cheaper path.
  sampler = mcmc.make_sampler(jax.vmap(lambda p, x: network.evaluate(p, x)[1],
                                       in_axes=(None, 0)),
                              spec.system, spec.mcmc, max(spec.states, 1))
  optimizer = (frozen(objective) if spec.evaluation
               else optimizers.make(spec.optim, objective))
  return Model(network, sampler, objective, optimizer, make_iteration(sampler, optimizer))


def init_state(spec: Spec, model: Model, key: PRNGKey) -> TrainState:
  """Fresh parameters and walkers on the local devices; opt_state is None until
  `with_opt_state` (after pretraining has changed the parameters).

  `key` must be the same on every process (parameters are drawn from it); each process
  draws its own walkers and per-device RNG streams from it folded with its index.
  """
  parallel.check_layout(spec.batch_size)
  k_params, k_walkers, k_run = jax.random.split(key, 3)
  params = model.network.init(k_params)
  me = parallel.process_index()
  x = model.sampler.init(jax.random.fold_in(k_walkers, me),
                         spec.batch_size // parallel.process_count())
  fresh = mcmc.init_state(x, spec.mcmc)
  walkers = MCMCState(x=parallel.shard(fresh.x), width=parallel.replicate(fresh.width),
                      acceptance_sum=parallel.replicate(fresh.acceptance_sum))
  return TrainState(params=parallel.replicate(params), opt_state=None, mcmc=walkers,
                    key=parallel.split_keys(jax.random.fold_in(k_run, me)),
                    step=parallel.replicate(jnp.zeros((), jnp.int32)))


def with_opt_state(state: TrainState, model: Model) -> TrainState:
  """The state with a fresh optimizer state for its parameters and walkers."""
  return state._replace(opt_state=model.iteration.init_opt_state(state))
