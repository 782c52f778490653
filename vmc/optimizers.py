"""One training iteration for every optimizer behind one interface.

`make_trainer(...)` returns a `Trainer` whose `step(state) -> (state, stats)` does a whole
iteration on all local devices: Metropolis sampling, then the parameter update
(KFAC natural gradient, Adam, or nothing for `none`). The loop in `train.py` is the same
for all three. With Adam and `none` the iteration is one compiled call; kfac-jax compiles its
own step, so with KFAC it is two (sample, then update).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import kfac_jax
import ml_collections
import optax

from vmc import loss as loss_lib
from vmc import mcmc, parallel


class TrainState(NamedTuple):
  """Everything that evolves during a run; every leaf has a leading device axis."""
  params: Any
  opt_state: Any
  walkers: mcmc.Walkers  # x: (n_dev, batch_per_device, 3N)
  width: jnp.ndarray  # Metropolis move width (bohr)
  acceptance_sum: jnp.ndarray  # summed acceptance since the last width adaptation
  key: jnp.ndarray  # per-device PRNG key
  step: jnp.ndarray  # iterations done (int32)


class StepStats(NamedTuple):
  """Per-iteration statistics (replicated over devices)."""
  energy: jnp.ndarray  # mean local energy before the update, hartree
  variance: jnp.ndarray  # variance of local energies, hartree^2
  pmove: jnp.ndarray  # Metropolis acceptance rate
  width: jnp.ndarray  # move width used for this iteration's moves
  learning_rate: jnp.ndarray
  rejected: jnp.ndarray  # 1.0 if the step was non-finite and rolled back, else 0.0


def _all_finite(tree) -> jnp.ndarray:
  leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(a.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def guard(candidate: TrainState, previous: TrainState, energy) -> tuple[TrainState, jnp.ndarray]:
  """Keeps `candidate` if its energy and parameters are finite (on every device), else
  rolls parameters, optimizer state, walkers and move width back to `previous`. The key
  and step advance either way, so a retry samples afresh. Returns (state, rejected)."""
  ok = jnp.isfinite(energy) & _all_finite(candidate.params)
  ok = parallel.pmean(ok.astype(jnp.float32)) == 1.0
  pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
  state = candidate._replace(
      params=pick(candidate.params, previous.params),
      opt_state=pick(candidate.opt_state, previous.opt_state),
      walkers=pick(candidate.walkers, previous.walkers),
      width=pick(candidate.width, previous.width),
      acceptance_sum=pick(candidate.acceptance_sum, previous.acceptance_sum))
  return state, 1.0 - ok.astype(jnp.float32)


class Trainer(NamedTuple):
  init_opt_state: Callable  # (params_rep, key_rep, walkers) -> opt_state (replicated)
  step: Callable  # (TrainState) -> (TrainState, StepStats)
  burn_in: Callable  # (TrainState, n_iterations) -> TrainState


def learning_rate_schedule(cfg: ml_collections.ConfigDict) -> Callable:
  """rate / (1 + t / delay) ** decay."""
  rate, delay, decay = cfg.optim.lr.rate, cfg.optim.lr.delay, cfg.optim.lr.decay

  def schedule(t):
    return rate * jnp.power(1.0 / (1.0 + (t / delay)), decay)

  return schedule


def make_trainer(batch_logabs: Callable, sampling_logabs: Callable,
                 batch_local_energy: Callable, cfg: ml_collections.ConfigDict) -> Trainer:
  """Builds the compiled iteration for cfg.optim.optimizer.

  batch_logabs is what the loss differentiates; sampling_logabs (the same values, possibly
  cheaper) is what the Metropolis sampler evaluates.
  """
  mcmc_step = make_sampler(sampling_logabs, cfg)
  loss = loss_lib.make_loss(batch_logabs, batch_local_energy, cfg.optim.clip_local_energy)
  schedule = learning_rate_schedule(cfg)
  name = cfg.optim.optimizer

  def sample(state: TrainState):
    """Per-device: moves walkers, adapts the width.

    Returns (state, stats without energy, key for the update).
    """
    key, k_mcmc, k_update = jax.random.split(state.key, 3)
    # log|psi| at the walkers under the current parameters (changed by the last update);
    # the Metropolis moves then carry it and evaluate the network at proposals only.
    walkers = mcmc.Walkers(state.walkers.x, sampling_logabs(state.params, state.walkers.x))
    walkers, pmove = mcmc_step(state.params, walkers, k_mcmc, state.width)
    pmove = parallel.pmean(pmove)
    acc = state.acceptance_sum + pmove
    adapt = (state.step + 1) % cfg.mcmc.adapt_frequency == 0
    new_width = jnp.where(
        adapt,
        mcmc.adapt_width(state.width, acc / cfg.mcmc.adapt_frequency,
                         cfg.mcmc.target_acceptance),
        state.width)
    stats = StepStats(energy=jnp.nan, variance=jnp.nan, pmove=pmove, width=state.width,
                      learning_rate=schedule(state.step.astype(jnp.float32)),
                      rejected=jnp.zeros(()))
    state = state._replace(walkers=walkers, key=key, width=new_width,
                           acceptance_sum=jnp.where(adapt, 0.0, acc))
    return state, stats, k_update

  def burn_in_body(state, n):
    """n sampling iterations, adapting the width after every one of them."""
    def body(_, s):
      s, stats, _ = sample(s)
      width = mcmc.adapt_width(stats.width, stats.pmove, cfg.mcmc.target_acceptance)
      return s._replace(width=width, acceptance_sum=jnp.zeros_like(s.acceptance_sum))
    return jax.lax.fori_loop(0, n, body, state)

  p_burn_in = parallel.pmap(burn_in_body, static_broadcasted_argnums=1, donate_argnums=0)

  if name == 'kfac':
    k = cfg.optim.kfac
    optimizer = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss, has_aux=True),
        l2_reg=k.l2_reg,
        norm_constraint=k.norm_constraint,
        value_func_has_aux=True,
        value_func_has_rng=True,
        learning_rate_schedule=schedule,
        momentum_schedule=lambda t: jnp.asarray(k.momentum),
        damping_schedule=lambda t: jnp.asarray(k.damping),
        min_damping=k.min_damping,
        curvature_ema=k.cov_ema_decay,
        inverse_update_period=k.invert_every,
        curvature_update_period=k.cov_update_every,
        num_burnin_steps=0,
        register_only_generic=k.register_only_generic,
        estimation_mode='fisher_exact',
        multi_device=True,
        pmap_axis_name=parallel.AXIS,
    )
    # Nothing donated here: the previous state must survive until the guard has run.
    p_sample = parallel.pmap(sample)
    p_guard = parallel.pmap(guard)
    p_copy = parallel.pmap(lambda tree: jax.tree_util.tree_map(jnp.copy, tree))

    def kfac_step(previous):
      # kfac-jax takes its step counter as a Python int too (it decides when to refresh the
      # curvature). Read from the state, it stays right after rolled-back steps; the read
      # costs no stall, since the training loop reads each step's statistics anyway.
      step_counter = int(parallel.first(previous.opt_state.step_counter))
      state, stats, k_update = p_sample(previous)
      # kfac-jax donates the parameters and optimizer state it is given: pass copies (made
      # here: kfac-jax's own copy_obj yields arrays that its pmap cannot take on
      # multi-host runs).
      params, opt_state = p_copy((state.params, state.opt_state))
      params, opt_state, kstats = optimizer.step(
          params, opt_state, k_update, batch=state.walkers.x,
          global_step_int=step_counter)
      candidate = state._replace(params=params, opt_state=opt_state, step=state.step + 1)
      state, rejected = p_guard(candidate, previous, kstats['loss'])
      stats = stats._replace(energy=kstats['loss'], variance=kstats['aux'].variance,
                             learning_rate=kstats['learning_rate'], rejected=rejected)
      return state, stats

    return Trainer(init_opt_state=optimizer.init, step=kfac_step, burn_in=p_burn_in)

  if name == 'adam':
    a = cfg.optim.adam
    tx = optax.adam(learning_rate=schedule, b1=a.b1, b2=a.b2, eps=a.eps)

    def adam_step(previous):
      state, stats, k_update = sample(previous)
      (energy, aux), grads = jax.value_and_grad(loss, has_aux=True)(
          state.params, k_update, state.walkers.x)
      updates, opt_state = tx.update(parallel.pmean(grads), state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      candidate = state._replace(params=params, opt_state=opt_state, step=state.step + 1)
      state, rejected = guard(candidate, previous, energy)
      return state, stats._replace(energy=energy, variance=aux.variance, rejected=rejected)

    p_init = parallel.pmap(tx.init)
    return Trainer(init_opt_state=lambda params, key, x: p_init(params),
                   step=parallel.pmap(adam_step, donate_argnums=0), burn_in=p_burn_in)

  if name == 'none':

    def evaluate(previous):
      state, stats, k_update = sample(previous)
      energy, aux = loss(state.params, k_update, state.walkers.x)
      state, rejected = guard(state._replace(step=state.step + 1), previous, energy)
      return state, stats._replace(energy=energy, variance=aux.variance, learning_rate=0.0,
                                   rejected=rejected)

    return Trainer(init_opt_state=lambda params, key, x: parallel.replicate(jnp.zeros(())),
                   step=parallel.pmap(evaluate, donate_argnums=0), burn_in=p_burn_in)

  raise ValueError(f'unknown optimizer {name!r}')


def make_sampler(batch_logabs: Callable, cfg: ml_collections.ConfigDict):
  return mcmc.make_mcmc_step(batch_logabs, cfg.mcmc.steps)
