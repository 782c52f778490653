"""KFAC (kfac-jax): natural-gradient steps with a Kronecker-factored Fisher.

log|psi| is registered as a normal predictive distribution of variance 1/4, so that
kfac-jax's Fisher is 4 <grad log|psi| grad log|psi|^T>, that of |psi|^2, paired with the
exact VMC gradient: the step for a given optim.lr.rate matches FermiNet's. Dense layers
are found by kfac-jax's graph matching, other parameters get diagonal blocks.

Two departures from kfac-jax's defaults, neither of which changes the update in exact
arithmetic (docs/benchmarks.md has what they save):

- kfac-jax's step is traced into the iteration's own compiled call (its staging context,
  as when it stages its own methods), so sampling, update and NaN guard are one call per
  iteration, with no copies of parameters and optimizer state and no host reads. The
  step counter kfac-jax wants as a Python int only decides whether to update the
  curvature; with optim.kfac.cov_update_every > 1 that choice is a lax.cond on the state.
- Dense blocks keep Cholesky factors of their damped Kronecker factors instead of their
  inverses, and precondition by triangular solves: (A + pi d)^-1 V (G + d/pi)^-1 costs
  about half the LU inversions and products it replaces.

Importing kfac-jax 0.0.8 on jax 0.9 sets a process-wide JAX flag (jax_pmap_shmap_merge to
False, the value that vmc.runtime.configure gives every run); this module is imported
only for KFAC runs, after vmc.optimizers.kfac_support has checked that the installed
kfac-jax runs on the installed JAX.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import kfac_jax
from jax.scipy.linalg import solve_triangular

from vmc import parallel
from vmc.spec import KfacSpec, LearningRateSpec
from vmc.optimizers import schedule
from vmc.types import Array, Objective, Optimizer, OptState, Params, PRNGKey, UpdateStats


def _register_output(logabs: Array) -> None:
  kfac_jax.register_normal_predictive_distribution(logabs[:, None], variance=0.25)


def _solve_axis(lower: Array, v: Array, axis: int) -> Array:
  """(L L^T)^-1 applied along one axis of v."""
  moved = jnp.moveaxis(v, axis, 0)
  flat = moved.reshape(moved.shape[0], -1)
  flat = solve_triangular(lower, flat, lower=True)
  flat = solve_triangular(lower, flat, lower=True, trans='T')
  return jnp.moveaxis(flat.reshape(moved.shape), 0, axis)


class _CholeskyCache(kfac_jax.KroneckerFactored):
  """For kfac-jax's Kronecker-factored blocks: the (-1) power by Cholesky solves.

  kfac-jax multiplies by inv(F_i) for each pi-adjusted, damped factor F_i, inverted at
  every step (optim.kfac.invert_every = 1) or cached as inv(F_i) / s (s spreads the
  block's scale over its factors). Here the factors are L_i = chol(F_i), or cached as
  chol(s F_i), and the multiplication solves with them. Same result in exact arithmetic;
  the other powers are kfac-jax's own.
  """

  def _update_cache(self, state: Any, identity_weight: Any, exact_powers: Any,
                    approx_powers: Any, eigenvalues: bool) -> Any:
    if exact_powers or eigenvalues or set(approx_powers) != {-1}:
      return super()._update_cache(state, identity_weight, exact_powers, approx_powers,
                                   eigenvalues)
    state = state.copy()
    factor_scale = jnp.power(self.state_dependent_scale(state), 1.0 / self.array_ndim)
    damped = kfac_jax.utils.pi_adjusted_kronecker_factors(
        *[factor.value for factor in state.factors], damping=identity_weight)
    cache = state.cache[str(next(iter(approx_powers)))]  # kfac-jax's key for -1
    for i, f in enumerate(damped):
      cache[f'{i}_factor'] = jnp.linalg.cholesky(f * factor_scale)
    return state

  def _multiply_matpower_unscaled(self, state: Any, vector: Any, identity_weight: Any,
                                  power: Any, exact_power: bool, use_cached: bool) -> Any:
    if power != -1 or exact_power:
      return super()._multiply_matpower_unscaled(state, vector, identity_weight, power,
                                                 exact_power, use_cached)
    if use_cached:
      lowers = [state.cache[str(power)][f'{i}_factor'] for i in range(len(state.factors))]
    else:  # (the block's scale is applied by the caller)
      lowers = [jnp.linalg.cholesky(f) for f in kfac_jax.utils.pi_adjusted_kronecker_factors(
          *[factor.value for factor in state.factors], damping=identity_weight)]
    v = self.parameters_shaped_list_to_array(vector)
    for i, lower in enumerate(lowers):
      v = _solve_axis(lower, v, i)
    return self.array_to_parameters_shaped_list(v)


class CholeskyDense(_CholeskyCache, kfac_jax.DenseTwoKroneckerFactored):
  """Dense layers on (batch, features) inputs."""


class CholeskyRepeatedDense(_CholeskyCache, kfac_jax.RepeatedDenseKroneckerFactored):
  """Dense layers applied at every electron (or pair): FermiNet's streams and orbitals."""


def make(k: KfacSpec, lr: LearningRateSpec, objective: Objective) -> Optimizer:
  loss = objective.make_loss(_register_output)
  optimizer = kfac_jax.Optimizer(
      value_and_grad_func=jax.value_and_grad(loss, has_aux=True),
      l2_reg=k.l2_reg,
      norm_constraint=k.norm_constraint,
      value_func_has_aux=True,
      value_func_has_rng=True,
      learning_rate_schedule=schedule.learning_rate(lr),  # type: ignore[arg-type]
      momentum_schedule=lambda t: jnp.asarray(k.momentum),
      damping_schedule=lambda t: jnp.asarray(k.damping),
      min_damping=k.min_damping,
      curvature_ema=k.cov_ema_decay,
      inverse_update_period=k.invert_every,
      curvature_update_period=k.cov_update_every,
      num_burnin_steps=0,
      register_only_generic=k.register_only_generic,
      layer_tag_to_block_ctor={'dense': CholeskyDense,
                               'repeated_dense': CholeskyRepeatedDense},
      estimation_mode='fisher_exact',
      multi_device=True,  # its means over devices are pmeans over the iteration's axis
      pmap_axis_name=parallel.AXIS,
  )

  def traced(method: Any, *args: Any, **kwargs: Any) -> Any:
    # Inside kfac-jax's staging context its staged methods run as plain functions, traced
    # into the caller's pmap (as they are inside its own pmapped step).
    with optimizer.staging_context():
      return method(*args, **kwargs)

  def init(params: Params, key: PRNGKey, x: Array) -> OptState:
    return traced(optimizer.init, params, key, x)

  def step(params: Params, opt_state: OptState, key: PRNGKey, x: Array,
           update_curvature: bool) -> tuple:
    # The Python step only selects the static branch: 0 updates the curvature, 1 not
    # (kfac-jax tests step % cov_update_every == 0; cov_update_every > 1 here).
    return traced(optimizer.step, params, opt_state, key, batch=x,
                  global_step_int=0 if update_curvature else 1)

  def update(params: Params, opt_state: OptState, key: PRNGKey, x: Array,
             step_: Array) -> tuple[Params, OptState, UpdateStats]:
    del step_  # kfac-jax counts its own steps (rolled back with its state by the guard)
    if k.cov_update_every == 1:
      stepped = step(params, opt_state, key, x, True)
    else:
      due = opt_state.step_counter % k.cov_update_every == 0
      stepped = jax.lax.cond(due, lambda: step(params, opt_state, key, x, True),
                             lambda: step(params, opt_state, key, x, False))
    params, opt_state, stats = stepped
    return params, opt_state, UpdateStats(stats['loss'], stats['aux'].variance,
                                          stats['learning_rate'], stats['aux'].energy_matrix)

  return Optimizer(init=init, update=update)
