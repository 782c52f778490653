"""The objective: the VMC energy of the network and its gradient, from clipped local energies.

L(theta) = <E_L> over walkers drawn from |psi_theta|^2. Its gradient is not the autodiff
gradient of a sample mean: it is the score-function estimator

  grad L = 2 < (E_L - <E_L>) grad log|psi| >,

with E_L clipped to median +- c * (mean absolute deviation) to tame heavy tails. A
custom_jvp gives the loss exactly that derivative. The `Objective` also exposes per-walker
log|psi| and E_L, for optimizers that work with per-walker Jacobians, and builds the loss
with a hook on log|psi| (kfac-jax registers it there as the model's output).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vmc import parallel
from vmc.types import (Array, AuxData, BatchEnergyFn, LogAbsFn, LossFn, Objective, OutputHook,
                       Params, PRNGKey)

__all__ = ['AuxData', 'clip_local_energy', 'make_objective']


def clip_local_energy(e_l: Array, width: float) -> Array:
  """Clips to median +- width * mean absolute deviation (both averaged over devices)."""
  median = parallel.pmean(jnp.median(e_l))
  mad = parallel.pmean(jnp.mean(jnp.abs(e_l - median)))
  return jnp.clip(e_l, median - width * mad, median + width * mad)


def make_objective(batch_logabs: LogAbsFn, batch_local_energy: BatchEnergyFn,
                   clip_width: float) -> Objective:
  """The VMC objective; every function acts on one device's batch (call inside pmap).

  batch_logabs(params, x (batch, 3N)) -> (batch,); batch_local_energy(params, x, key)
  likewise, the key for its stochastic terms (the loss's key).
  """

  def make_loss(output_hook: OutputHook | None = None) -> LossFn:
    """loss(params, key, x) -> (energy, AuxData) with the VMC gradient."""

    @jax.custom_jvp
    def loss(params: Params, key: PRNGKey, x: Array) -> tuple[Array, AuxData]:
      e_matrix = batch_local_energy(params, x, key)
      # Excited states: the loss is the trace of the energy matrix (the sum of the K
      # energies), and its gradient the same estimator with log|Psi| of the K copies.
      e_l = jnp.trace(e_matrix, axis1=1, axis2=2) if e_matrix.ndim == 3 else e_matrix
      energy = parallel.pmean(jnp.mean(e_l))
      variance = parallel.pmean(jnp.mean((e_l - energy) ** 2))
      mean_matrix = energy if e_matrix.ndim == 1 else parallel.pmean(jnp.mean(e_matrix, 0))
      return energy, AuxData(variance=variance, local_energy=e_l, energy_matrix=mean_matrix)

    @loss.defjvp
    def loss_jvp(primals, tangents):  # noqa: ANN001, ANN202
      params, key, x = primals
      energy, aux = loss(params, key, x)
      e_clip = clip_local_energy(aux.local_energy, clip_width)
      diff = e_clip - parallel.pmean(jnp.mean(e_clip))
      logabs, logabs_dot = jax.jvp(lambda p: batch_logabs(p, x), (params,), (tangents[0],))
      if output_hook is not None:
        output_hook(logabs)
      energy_dot = 2.0 * jnp.mean(diff * logabs_dot)
      aux_dot = jax.tree_util.tree_map(jnp.zeros_like, aux)
      return (energy, aux), (energy_dot, aux_dot)

    return loss

  return Objective(logabs=batch_logabs, local_energy=batch_local_energy,
                   clip_width=clip_width, loss=make_loss(None), make_loss=make_loss)
