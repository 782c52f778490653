"""The types at vmc's boundaries: arrays, the training state, and the interfaces of the
parts one iteration is composed of (sampler, objective, optimizer, Hamiltonian terms).

Shapes: one walker x is (n_electrons * 3,); a batch is (batch, n_electrons * 3). Inside
the compiled iteration every function sees one device's batch; on the host, device
arrays carry a leading device axis (see vmc.parallel).

  Sampler    moves walkers by Metropolis and adapts the move width    vmc.mcmc
  Objective  per-walker log|psi| and E_L, clipping, the VMC gradient  vmc.loss
  Optimizer  init(params, key, x), update(params, opt_state, ...)      vmc.optimizers.*
  EnergyTerm one term of E_L for one walker (kinetic, potential, ...)  vmc.hamiltonian
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol
from collections.abc import Callable

import jax
import numpy as np

Array = jax.Array
# State arrays: numpy on the host between compiled calls, jax.Array inside them (Any:
# mypy cannot tell the two apart where it matters).
ArrayLike = Any
PRNGKey = jax.Array
Params = Any  # a pytree of parameter arrays (flax's {'params': ...})
OptState = Any  # a pytree


# ----------------------------------------------------------------------------------------
# Wavefunctions and the Hamiltonian.


class WavefunctionFn(Protocol):
  def __call__(self, params: Params, x: Array, /) -> tuple[Array, Array]:
    """(sign, log|psi|) of one walker x (3N,)."""


class LogAbsFn(Protocol):
  def __call__(self, params: Params, x: Array, /) -> Array:
    """log|psi|: of one walker (3N,) -> (), or batched (batch, 3N) -> (batch,)."""


class LaplacianFn(Protocol):
  def __call__(self, params: Params, x: Array, /) -> tuple[Array, Array]:
    """(lap log|psi| (), grad log|psi| (3N,)) of one walker."""


class EnergyTerm(Protocol):
  def __call__(self, params: Params, x: Array, /) -> Array:
    """One additive term of the local energy of one walker x (3N,), in hartree."""


LocalEnergyFn = EnergyTerm  # the sum of the terms: (params, x) -> E_L, one walker


class BatchEnergyFn(Protocol):
  def __call__(self, params: Params, x: Array, key: PRNGKey | None = None, /) -> Array:
    """Local energies (or one term of them) of a batch x (batch, 3N) -> (batch,), or
    (batch, K, K) local energy matrices of K excited states (vmc.states); key
    drives the random parts of a stochastic estimator (None: its deterministic form)."""


# ----------------------------------------------------------------------------------------
# State.


class MCMCState(NamedTuple):
  """The sampler's state on one device."""
  x: ArrayLike  # (batch_per_device, 3N) walker positions, bohr
  width: ArrayLike  # () Gaussian move width, bohr
  acceptance_sum: ArrayLike  # () acceptance summed since the last width adaptation


class TrainState(NamedTuple):
  """Everything that evolves during a run (checkpointed whole by vmc.checkpoint).

  On the host every leaf has a leading device axis: replicated for params, opt_state,
  the move width, acceptance_sum and step; split for the walkers; one key per device.
  """
  params: Params
  opt_state: OptState
  mcmc: MCMCState
  key: ArrayLike  # this device's RNG key
  step: ArrayLike  # () int32: iterations done


class StepStats(NamedTuple):
  """Statistics of one iteration (the same on every device)."""
  energy: Array  # mean local energy before the update, hartree
  variance: Array  # variance of the local energies, hartree^2
  pmove: Array  # Metropolis acceptance rate
  width: Array  # move width of this iteration's moves, bohr
  learning_rate: Array
  rejected: Array  # 1.0 if the step was non-finite and rolled back, else 0.0
  # the mean local energy matrix (K, K) of K excited states (vmc.states); () = energy
  energy_matrix: Array


# ----------------------------------------------------------------------------------------
# Sampler.


class SamplerStepFn(Protocol):
  def __call__(self, params: Params, state: MCMCState, key: PRNGKey,
               iteration: Array, /) -> tuple[MCMCState, Array]:
    """Metropolis moves, then the width adapted if `iteration` ends an adaptation
    window. Returns (state, acceptance averaged over all devices)."""


class AdaptStepFn(Protocol):
  def __call__(self, params: Params, state: MCMCState,
               key: PRNGKey, /) -> tuple[MCMCState, Array]:
    """Metropolis moves, then the width adapted from this step's acceptance alone."""


class BurnInFn(Protocol):
  def __call__(self, params: Params, state: MCMCState, key: PRNGKey,
               n: int, /) -> tuple[MCMCState, PRNGKey]:
    """n adapting steps (n static); returns the state and the advanced key."""


class Sampler(NamedTuple):
  """Metropolis sampling of |psi|^2; step functions are per device (call inside pmap)."""
  init: Callable[[PRNGKey, int], np.ndarray]  # (key, n) -> initial walkers (n, 3N), host
  step: SamplerStepFn  # training and evaluation iterations
  adapt_step: AdaptStepFn  # pretraining
  burn_in: BurnInFn


# ----------------------------------------------------------------------------------------
# Objective.


class AuxData(NamedTuple):
  variance: Array  # variance of the unclipped local energies over all walkers
  local_energy: Array  # (batch_per_device,): E_L, or its trace for excited states
  energy_matrix: Array  # mean over all walkers of E_L: () or (K, K) for excited states


class LossFn(Protocol):
  def __call__(self, params: Params, key: PRNGKey, x: Array, /) -> tuple[Array, AuxData]:
    """(mean local energy over all devices, AuxData); its gradient is the VMC one."""


# Called on the batch's log|psi| (batch,) inside the loss's derivative, e.g. to register
# it as the model output with kfac-jax.
OutputHook = Callable[[Array], None]


class Objective(NamedTuple):
  """The VMC energy of a network on one device's batch (means over all devices)."""
  logabs: LogAbsFn  # batched: (params, x (batch, 3N)) -> (batch,)
  local_energy: BatchEnergyFn  # (params, x (batch, 3N), key=None) -> E_L (batch,)
  clip_width: float  # E_L clipped to median +- clip_width * mean absolute deviation
  loss: LossFn
  make_loss: Callable[[OutputHook | None], LossFn]  # the loss with a hook on log|psi|


# ----------------------------------------------------------------------------------------
# Optimizer.


class UpdateStats(NamedTuple):
  energy: Array  # the loss: mean local energy at the parameters before the update
  variance: Array
  learning_rate: Array
  energy_matrix: Array  # AuxData.energy_matrix


class OptInitFn(Protocol):
  def __call__(self, params: Params, key: PRNGKey, x: Array, /) -> OptState:
    """The optimizer state for `params`."""


class OptUpdateFn(Protocol):
  def __call__(self, params: Params, opt_state: OptState, key: PRNGKey, x: Array,
               step: Array, /) -> tuple[Params, OptState, UpdateStats]:
    """One update from the walkers x; step is the iteration count (for schedules)."""


class Optimizer(NamedTuple):
  """An optax-style optimizer of the objective: init and update are per-device functions
  (called inside pmap, where means over devices are pmeans)."""
  init: OptInitFn
  update: OptUpdateFn
