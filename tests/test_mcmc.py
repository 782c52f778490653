import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmc import mcmc, systems


def test_metropolis_samples_hydrogen_1s_density():
  """|psi_1s|^2 = exp(-2r)/pi has <r> = 1.5 bohr, <r^2> = 3 bohr^2."""
  batch_logabs = lambda params, x: -jnp.linalg.norm(x, axis=-1)
  moves = jax.jit(mcmc.make_moves(batch_logabs, steps=20))
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (4096, 3))
  logabs = batch_logabs(None, x)
  width = 1.0
  samples, acceptance = [], []
  for t in range(60):
    key, sub = jax.random.split(key)
    x, logabs, pmove = moves(None, x, logabs, sub, width)
    if t >= 20 and t % 4 == 0:  # 80 moves apart: nearly independent snapshots
      samples.append(np.linalg.norm(np.asarray(x), axis=-1))
      acceptance.append(float(pmove))
  r = np.concatenate(samples)
  # Standard error: sigma_r = sqrt(3 - 2.25) over ~4096 * 10 effective samples.
  se = np.sqrt(0.75 / r.size)
  assert abs(r.mean() - 1.5) < 4 * se * 1.5, (r.mean(), se)
  assert abs((r ** 2).mean() - 3.0) < 0.05
  assert 0.2 < np.mean(acceptance) < 0.9
  # The carried log|psi| is that of the current positions.
  np.testing.assert_allclose(logabs, batch_logabs(None, x), rtol=1e-6)


def test_sampler_adapts_the_width_on_its_schedule(make_tiny_config):
  """step adapts every adapt_frequency iterations from the window's mean acceptance;
  adapt_step after every step; burn_in is n adapt_steps."""
  from vmc import config as config_lib, parallel
  spec = config_lib.resolve(make_tiny_config(**{'mcmc.adapt_frequency': 3,
                                                'mcmc.move_width': 0.1}))
  batch_logabs = lambda params, x: -0.05 * jnp.linalg.norm(
      x.reshape(len(x), -1, 3), axis=-1).sum(-1)
  sampler = mcmc.make_sampler(batch_logabs, spec.system, spec.mcmc)
  x = sampler.init(jax.random.PRNGKey(0), 64)
  state = parallel.replicate(mcmc.init_state(x, spec.mcmc))
  step = parallel.pmap(sampler.step)
  keys = parallel.split_keys(jax.random.PRNGKey(1))
  widths, sums = [], []
  for t in range(6):  # nearly flat |psi|^2, short moves: acceptance above the window
    state, pmove = step(None, state, keys, parallel.replicate(np.int32(t)))
    widths.append(float(parallel.first(state.width)))
    sums.append(float(parallel.first(state.acceptance_sum)))
  assert widths == pytest.approx([0.1, 0.1, 0.11, 0.11, 0.11, 0.121])
  assert sums[2] == sums[5] == 0.0 and sums[1] > sums[0] > 0.0
  burnt, _ = parallel.pmap(sampler.burn_in, static_broadcasted_argnums=3)(
      None, state, keys, 4)
  assert float(parallel.first(burnt.width)) == pytest.approx(0.1 * 1.1 ** 6)


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
