"""No update: the wavefunction is frozen and only sampled (evaluation runs)."""

from __future__ import annotations

import jax.numpy as jnp

from vmc.config import Spec
from vmc.types import Array, Objective, Optimizer, OptState, Params, PRNGKey, UpdateStats


def make(spec: Spec, objective: Objective) -> Optimizer:
  del spec

  def init(params: Params, key: PRNGKey, x: Array) -> OptState:
    del params, key, x
    return jnp.zeros(())

  def update(params: Params, opt_state: OptState, key: PRNGKey, x: Array,
             step: Array) -> tuple[Params, OptState, UpdateStats]:
    del step
    energy, aux = objective.loss(params, key, x)
    return params, opt_state, UpdateStats(energy, aux.variance, jnp.zeros_like(energy))

  return Optimizer(init=init, update=update)
