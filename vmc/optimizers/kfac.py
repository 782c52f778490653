"""KFAC (kfac-jax): natural-gradient steps with a Kronecker-factored Fisher.

log|psi| is registered as a normal predictive distribution of variance 1/4, so that
kfac-jax's Fisher is 4 <grad log|psi| grad log|psi|^T>, that of |psi|^2, paired with the
exact VMC gradient: the step for a given optim.lr.rate matches FermiNet's. Dense layers
are found by kfac-jax's graph matching, other parameters get diagonal blocks.

kfac-jax compiles its own step over the devices (it must not be wrapped in jit or pmap), so
this optimizer is `compiled`. Importing kfac-jax also changes a process-wide JAX flag
(jax_pmap_shmap_merge, see vmc.parallel); this module is imported only for KFAC runs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import kfac_jax

from vmc import parallel
from vmc.config import Spec
from vmc.optimizers import schedule
from vmc.types import Array, Objective, Optimizer, OptState, Params, PRNGKey, UpdateStats


def _register_output(logabs: Array) -> None:
  kfac_jax.register_normal_predictive_distribution(logabs[:, None], variance=0.25)


def make(spec: Spec, objective: Objective) -> Optimizer:
  k = spec.optim.kfac
  loss = objective.make_loss(_register_output)
  optimizer = kfac_jax.Optimizer(
      value_and_grad_func=jax.value_and_grad(loss, has_aux=True),
      l2_reg=k.l2_reg,
      norm_constraint=k.norm_constraint,
      value_func_has_aux=True,
      value_func_has_rng=True,
      learning_rate_schedule=schedule.learning_rate(spec.optim.lr),  # type: ignore[arg-type]
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
  # kfac-jax donates the parameters and optimizer state it is given, but the iteration
  # keeps the previous ones until its NaN guard has run: the step gets copies (made here:
  # kfac-jax's own copy yields arrays that its pmap cannot take on multi-host runs).
  copy = parallel.pmap(lambda tree: jax.tree_util.tree_map(jnp.copy, tree))

  def update(params: Params, opt_state: OptState, key: PRNGKey, x: Array,
             step: Array) -> tuple[Params, OptState, UpdateStats]:
    del step  # kfac-jax counts its own steps
    # kfac-jax takes its step counter as a Python int too (it decides when to refresh the
    # curvature). Read from the state, it stays right after rolled-back steps; the read
    # costs no stall, since the training loop reads each step's statistics anyway.
    step_counter = int(parallel.first(opt_state.step_counter))
    params, opt_state = copy((params, opt_state))
    stepped: Any = optimizer.step(params, opt_state, key, batch=x,
                                  global_step_int=step_counter)
    params, opt_state, stats = stepped
    return params, opt_state, UpdateStats(stats['loss'], stats['aux'].variance,
                                          stats['learning_rate'])

  return Optimizer(init=optimizer.init, update=update, compiled=True)
