"""Adam (optax) on the VMC gradient, averaged over devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from vmc import parallel
from vmc.optimizers import schedule
from vmc.spec import AdamSpec, LearningRateSpec
from vmc.types import Array, Objective, Optimizer, OptState, Params, PRNGKey, UpdateStats


def make(a: AdamSpec, lr_spec: LearningRateSpec, objective: Objective) -> Optimizer:
  lr = schedule.learning_rate(lr_spec)
  tx = optax.adam(learning_rate=lr, b1=a.b1, b2=a.b2, eps=a.eps)

  def init(params: Params, key: PRNGKey, x: Array) -> OptState:
    del key, x
    return tx.init(params)

  def update(params: Params, opt_state: OptState, key: PRNGKey, x: Array,
             step: Array) -> tuple[Params, OptState, UpdateStats]:
    (energy, aux), grads = jax.value_and_grad(objective.loss, has_aux=True)(params, key, x)
    updates, opt_state = tx.update(parallel.pmean(grads), opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, UpdateStats(energy, aux.variance, lr(step.astype(jnp.float32)),
                                          aux.energy_matrix)

  return Optimizer(init=init, update=update)
