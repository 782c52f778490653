"""The learning-rate schedule shared by the optimizers (FermiNet's)."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from vmc.spec import LearningRateSpec
from vmc.types import Array


def learning_rate(spec: LearningRateSpec) -> Callable[[Array], Array]:
  """t -> rate / (1 + t / delay) ** decay, t the iteration count."""
  rate, delay, decay = spec.rate, spec.delay, spec.decay

  def schedule(t: Array) -> Array:
    return rate * jnp.power(1.0 / (1.0 + (t / delay)), decay)

  return schedule
