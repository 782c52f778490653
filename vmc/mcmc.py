"""Metropolis-Hastings sampling of |psi|^2 with Gaussian all-electron moves.

`make_sampler` builds the one sampler that pretraining (on |psi_HF|^2), burn-in, training
and evaluation share: it owns the walkers' positions, the move width and its adaptation
toward an acceptance window.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vmc import parallel, systems
from vmc.spec import SamplerSpec
from vmc.types import Array, LogAbsFn, MCMCState, Params, PRNGKey, Sampler


def init_positions(key: PRNGKey, system: systems.System, batch: int,
                   width: float) -> np.ndarray:
  """(batch, n_electrons * 3) initial electrons, Gaussian around their nuclei.

  Electrons go to nuclei in proportion to nuclear charge (neutral atoms first, then the
  remainder to the nuclei with the largest charge), and each atom's electrons alternate
  spin up/down so that both spin channels are spread over the molecule.
  """
  charges = [int(z) for z in system.charges]
  n_elec = system.n_electrons
  per_atom = list(charges)
  # Adjust for net charge: remove from / add to the largest atoms first.
  order = np.argsort(charges)[::-1]
  k = 0
  while sum(per_atom) > n_elec:
    i = order[k % len(order)]
    if per_atom[i] > 0:
      per_atom[i] -= 1
    k += 1
  k = 0
  while sum(per_atom) < n_elec:
    per_atom[order[k % len(order)]] += 1
    k += 1
  # Fill spins: alternate up/down on each atom, respecting the totals.
  n_up, n_down = system.electrons
  up_sites: list[int] = []
  down_sites: list[int] = []
  for atom, count in enumerate(per_atom):
    for e in range(count):
      want_up = e % 2 == 0
      if (want_up and len(up_sites) < n_up) or len(down_sites) >= n_down:
        up_sites.append(atom)
      else:
        down_sites.append(atom)
  centres = system.positions[np.array(up_sites + down_sites, dtype=int)]  # (n, 3)
  noise = jax.random.normal(key, (batch, n_elec, 3), dtype=jnp.float32)
  return np.asarray(centres[None] + width * np.asarray(noise)).reshape(batch, -1).astype(
      np.float32)


def make_moves(batch_logabs: LogAbsFn, steps: int) -> Callable:
  """Returns moves(params, x, logabs, key, width) -> (x, logabs, acceptance).

  batch_logabs(params, x (batch, 3N)) -> (batch,); logabs is its value at x. Runs `steps`
  Metropolis moves x' = x + width * N(0, 1) of all electrons at once, accepted with
  probability min(1, |psi(x')|^2 / |psi(x)|^2). log|psi| of the current positions is
  carried, so each move evaluates the network once. The acceptance is this device's mean.
  """

  def one_move(params: Params, width: Array, carry: tuple, key: PRNGKey) -> tuple:
    x, logabs, accepted = carry
    k_move, k_accept = jax.random.split(key)
    x_new = x + width * jax.random.normal(k_move, x.shape, x.dtype)
    logabs_new = batch_logabs(params, x_new)
    log_u = jnp.log(jax.random.uniform(k_accept, logabs.shape, logabs.dtype))
    accept = log_u < 2.0 * (logabs_new - logabs)
    x = jnp.where(accept[:, None], x_new, x)
    logabs = jnp.where(accept, logabs_new, logabs)
    return (x, logabs, accepted + jnp.mean(accept.astype(x.dtype))), None

  def moves(params: Params, x: Array, logabs: Array, key: PRNGKey,
            width: Array) -> tuple[Array, Array, Array]:
    keys = jax.random.split(key, steps)
    carry = (x, logabs, jnp.zeros((), x.dtype))
    (x, logabs, accepted), _ = jax.lax.scan(
        lambda c, k: one_move(params, width, c, k), carry, keys)
    return x, logabs, accepted / steps

  return moves


def adapt_width(width: Array | float, mean_acceptance: Array | float,
                target: tuple[float, float]) -> Array:
  """Multiplicative move-width update toward an acceptance inside `target`."""
  lo, hi = target
  factor = jnp.where(mean_acceptance > hi, 1.1, jnp.where(mean_acceptance < lo, 1 / 1.1, 1.0))
  return width * factor


def init_state(x: Array | np.ndarray, spec: SamplerSpec) -> MCMCState:
  """Sampler state for walkers x at the configured initial move width (host arrays)."""
  return MCMCState(x=x, width=np.asarray(spec.move_width, np.float32),
                   acceptance_sum=np.zeros((), np.float32))


def make_sampler(batch_logabs: LogAbsFn, system: systems.System,
                 spec: SamplerSpec, copies: int = 1) -> Sampler:
  """The Metropolis sampler of |psi|^2 with psi given by batch_logabs (per device), of
  walkers of `copies` copies of the system's electrons (K for K excited states, each copy
  placed as the electrons of one walker).

  The width is adapted toward spec.target_acceptance: in `step` every
  spec.adapt_frequency iterations from the mean acceptance of that window, in
  `adapt_step` and `burn_in` after every step.
  """
  moves = make_moves(batch_logabs, spec.steps)

  def move(params: Params, state: MCMCState, key: PRNGKey) -> tuple[Array, Array]:
    # log|psi| under the current parameters (changed by the last update), then carried.
    logabs = batch_logabs(params, state.x)
    x, _, pmove = moves(params, state.x, logabs, key, state.width)
    return x, parallel.pmean(pmove)

  def step(params: Params, state: MCMCState, key: PRNGKey,
           iteration: Array) -> tuple[MCMCState, Array]:
    x, pmove = move(params, state, key)
    acc = state.acceptance_sum + pmove
    adapt = (iteration + 1) % spec.adapt_frequency == 0
    width = jnp.where(adapt, adapt_width(state.width, acc / spec.adapt_frequency,
                                         spec.target_acceptance), state.width)
    return MCMCState(x, width, jnp.where(adapt, 0.0, acc)), pmove

  def adapt_step(params: Params, state: MCMCState, key: PRNGKey) -> tuple[MCMCState, Array]:
    x, pmove = move(params, state, key)
    width = adapt_width(state.width, pmove, spec.target_acceptance)
    return MCMCState(x, width, jnp.zeros_like(state.acceptance_sum)), pmove

  def burn_in(params: Params, state: MCMCState, key: PRNGKey,
              n: int) -> tuple[MCMCState, PRNGKey]:
    # The key is split as a training iteration splits it (next, moves, update).
    def body(_: int, carry: tuple) -> tuple:
      state, key = carry
      key, k_moves, _ = jax.random.split(key, 3)
      return adapt_step(params, state, k_moves)[0], key
    return jax.lax.fori_loop(0, n, body, (state, key))

  def init(key: PRNGKey, n: int) -> np.ndarray:
    return init_positions(key, system, n * copies, spec.init_width).reshape(n, -1)

  return Sampler(init=init, step=step, adapt_step=adapt_step, burn_in=burn_in)
