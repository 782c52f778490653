"""The VMC energy and its gradient with clipped local energies.

L(theta) = <E_L> over walkers drawn from |psi_theta|^2. Its gradient is not the autodiff
gradient of a sample mean: it is the score-function estimator

  grad L = 2 < (E_L - <E_L>) grad log|psi| >,

with E_L clipped to median +- c * (mean absolute deviation) to tame heavy tails. A
custom_jvp gives the loss exactly that derivative, and registers log|psi| with kfac-jax as
the model's output so that KFAC builds its curvature from the same graph.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import kfac_jax

from vmc import parallel


class AuxData(NamedTuple):
  variance: jnp.ndarray  # variance of unclipped local energies over all walkers
  local_energy: jnp.ndarray  # (batch_per_device,)


def clip_local_energy(e_l: jnp.ndarray, width: float) -> jnp.ndarray:
  """Clips to median +- width * mean absolute deviation (both averaged over devices)."""
  median = parallel.pmean(jnp.median(e_l))
  mad = parallel.pmean(jnp.mean(jnp.abs(e_l - median)))
  return jnp.clip(e_l, median - width * mad, median + width * mad)


def make_loss(batch_logabs: Callable, batch_local_energy: Callable, clip_width: float):
  """Returns loss(params, key, x) -> (energy, AuxData) with the VMC gradient.

  batch_logabs(params, x) -> (batch,); batch_local_energy(params, x) -> (batch,).
  Call inside `parallel.pmap` (means are taken over all devices).
  """

  @jax.custom_jvp
  def loss(params, key, x):
    del key
    e_l = batch_local_energy(params, x)
    energy = parallel.pmean(jnp.mean(e_l))
    variance = parallel.pmean(jnp.mean((e_l - energy) ** 2))
    return energy, AuxData(variance=variance, local_energy=e_l)

  @loss.defjvp
  def loss_jvp(primals, tangents):
    params, key, x = primals
    energy, aux = loss(params, key, x)
    e_clip = clip_local_energy(aux.local_energy, clip_width)
    diff = e_clip - parallel.pmean(jnp.mean(e_clip))
    logabs, logabs_dot = jax.jvp(lambda p: batch_logabs(p, x), (params,), (tangents[0],))
    # Variance 1/4 makes KFAC's Fisher 4 <grad log|psi| grad log|psi|^T>, the Fisher
    # information of |psi|^2, matching the exact gradient below (and FermiNet's step size).
    kfac_jax.register_normal_predictive_distribution(logabs[:, None], variance=0.25)
    energy_dot = 2.0 * jnp.mean(diff * logabs_dot)
    aux_dot = jax.tree_util.tree_map(jnp.zeros_like, aux)
    return (energy, aux), (energy_dot, aux_dot)

  return loss
