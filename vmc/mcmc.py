"""Metropolis-Hastings sampling of |psi|^2 with Gaussian all-electron moves."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vmc import systems


class Walkers(NamedTuple):
  """A batch of Markov chains. x: (batch, n_electrons * 3); logabs: (batch,) at x."""
  x: jnp.ndarray
  logabs: jnp.ndarray


def init_positions(key, system: systems.System, batch: int, width: float) -> np.ndarray:
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
  up_sites, down_sites = [], []
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


def make_mcmc_step(batch_logabs: Callable, steps: int):
  """Returns mcmc_step(params, walkers, key, width) -> (walkers, acceptance).

  batch_logabs(params, x) -> (batch,). Runs `steps` Metropolis moves x' = x + width * N(0, 1)
  for all electrons at once, accepted with probability min(1, |psi(x')|^2 / |psi(x)|^2).
  log|psi| of the current state is carried, so each move evaluates the network only once.
  """

  def one_move(params, width, carry, key):
    x, logabs, accepted = carry
    k_move, k_accept = jax.random.split(key)
    x_new = x + width * jax.random.normal(k_move, x.shape, x.dtype)
    logabs_new = batch_logabs(params, x_new)
    log_u = jnp.log(jax.random.uniform(k_accept, logabs.shape, logabs.dtype))
    accept = log_u < 2.0 * (logabs_new - logabs)
    x = jnp.where(accept[:, None], x_new, x)
    logabs = jnp.where(accept, logabs_new, logabs)
    return (x, logabs, accepted + jnp.mean(accept.astype(x.dtype))), None

  def mcmc_step(params, walkers: Walkers, key, width):
    keys = jax.random.split(key, steps)
    carry = (walkers.x, walkers.logabs, jnp.zeros((), walkers.x.dtype))
    (x, logabs, accepted), _ = jax.lax.scan(
        lambda c, k: one_move(params, width, c, k), carry, keys)
    return Walkers(x, logabs), accepted / steps

  return mcmc_step


def adapt_width(width, mean_acceptance, target: tuple[float, float]):
  """Multiplicative move-width update toward an acceptance inside `target`."""
  lo, hi = target
  factor = jnp.where(mean_acceptance > hi, 1.1, jnp.where(mean_acceptance < lo, 1 / 1.1, 1.0))
  return width * factor
