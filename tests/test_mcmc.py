import jax
import jax.numpy as jnp
import numpy as np

from vmc import mcmc, systems


def test_metropolis_samples_hydrogen_1s_density():
  """|psi_1s|^2 = exp(-2r)/pi has <r> = 1.5 bohr, <r^2> = 3 bohr^2."""
  batch_logabs = lambda params, x: -jnp.linalg.norm(x, axis=-1)
  step = jax.jit(mcmc.make_mcmc_step(batch_logabs, steps=20))
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (4096, 3))
  walkers = mcmc.Walkers(x, batch_logabs(None, x))
  width = 1.0
  samples, acceptance = [], []
  for t in range(60):
    key, sub = jax.random.split(key)
    walkers, pmove = step(None, walkers, sub, width)
    if t >= 20 and t % 4 == 0:  # 80 moves apart: nearly independent snapshots
      samples.append(np.linalg.norm(np.asarray(walkers.x), axis=-1))
      acceptance.append(float(pmove))
  r = np.concatenate(samples)
  # Standard error: sigma_r = sqrt(3 - 2.25) over ~4096 * 10 effective samples.
  se = np.sqrt(0.75 / r.size)
  assert abs(r.mean() - 1.5) < 4 * se * 1.5, (r.mean(), se)
  assert abs((r ** 2).mean() - 3.0) < 0.05
  assert 0.2 < np.mean(acceptance) < 0.9
  # The carried log|psi| is that of the current positions.
  np.testing.assert_allclose(walkers.logabs, batch_logabs(None, walkers.x), rtol=1e-6)


def test_adapt_width_moves_toward_target():
  assert float(mcmc.adapt_width(1.0, 0.9, (0.5, 0.55))) > 1.0
  assert float(mcmc.adapt_width(1.0, 0.2, (0.5, 0.55))) < 1.0
  assert float(mcmc.adapt_width(1.0, 0.52, (0.5, 0.55))) == 1.0


def test_initial_positions_follow_nuclei_and_spins():
  system = systems.make_system(molecule='LiH')  # Li: 3 electrons, H: 1
  x = mcmc.init_positions(jax.random.PRNGKey(0), system, 2000, 0.1)
  pos = x.reshape(2000, 4, 3).mean(axis=0)
  li, h = system.positions
  near_h = [np.linalg.norm(p - h) < 0.2 for p in pos]
  near_li = [np.linalg.norm(p - li) < 0.2 for p in pos]
  assert sum(near_h) == 1 and sum(near_li) == 3
  # Both spin channels have an electron on Li.
  assert near_li[0] or near_li[1]
  assert near_li[2] or near_li[3]
  cation = systems.make_system(molecule='LiH', charge=1, spin=1)  # 3 electrons
  assert mcmc.init_positions(jax.random.PRNGKey(0), cation, 4, 1.0).shape == (4, 9)
