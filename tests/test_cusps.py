"""Cusp conditions: where an option builds a cusp in, E_L stays bounded as particles meet.

The Psiformer sees electron-nucleus features only, so its determinants are smooth where two
electrons meet, and the simple_ee Jastrow gives psi the Kato slopes (1/2 for opposite,
1/4 for same spins): the kinetic energy's 1/r then cancels the Coulomb 1/r. Without the
Jastrow E_L diverges like +1/r: the check below can fail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from conftest import TINY_PSIFORMER, make_network
from vmc import hamiltonian, systems
from vmc.networks import jastrows, ops, orbitals


def _local_energy_at_coalescence(make_tiny_config, jastrow, pair, distances):
  system = systems.make_system(atom='Li')  # (2, 1) electrons
  cfg = make_tiny_config(**TINY_PSIFORMER, **{'network.jastrow': jastrow})
  with enable_x64(True):
    net = make_network(system, cfg)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                    net.init(jax.random.PRNGKey(0)))
    e_l = jax.jit(hamiltonian.make_local_energy(net.apply, system, 'loop'))
    base = np.array([[0.7, -0.3, 0.4], [-0.9, 0.5, 0.8], [0.2, 1.1, -0.6]])
    direction = np.array([0.6, 0.0, 0.8])
    out = []
    for eps in distances:
      pos = base.copy()
      pos[pair[1]] = pos[pair[0]] + eps * direction
      out.append(float(e_l(params, jnp.asarray(pos.reshape(-1)))))
  return np.array(out)


@pytest.mark.slow
@pytest.mark.parametrize('pair', [(0, 2), (0, 1)], ids=['opposite_spins', 'same_spins'])
def test_psiformer_jastrow_keeps_local_energy_bounded_as_electrons_meet(pair,
                                                                         make_tiny_config):
  distances = [1e-2, 1e-3, 1e-4, 1e-5]
  with_cusp = _local_energy_at_coalescence(make_tiny_config, 'simple_ee', pair, distances)
  assert np.all(np.isfinite(with_cusp))
  assert np.ptp(with_cusp) < 0.5, with_cusp  # converges to a finite limit
  without = _local_energy_at_coalescence(make_tiny_config, 'none', pair, distances[-1:])
  # Nothing cancels the Coulomb term: E_L ~ +1/r (1e5 Ha here).
  assert without[0] > 0.5 / distances[-1], without


def _jastrow(nspins, a_par, a_anti):
  """x (3N,) or ops.seed(x) -> J of the simple_ee Jastrow with these parameters."""
  module = jastrows.SimpleEE(nspins)
  params = {'params': {jastrows.PARALLEL: jnp.array([a_par]),
                       jastrows.ANTIPARALLEL: jnp.array([a_anti])}}
  return lambda x: module.apply(params, orbitals.features(x, jnp.zeros((1, 3))).r_ee)


def test_jastrow_is_its_formula_and_its_derivatives_are_exact():
  nspins = (3, 2)
  with enable_x64(True):
    x = jax.random.normal(jax.random.PRNGKey(0), (15,), jnp.float64)
    f = _jastrow(nspins, 0.7, 1.3)
    pos = np.asarray(x).reshape(-1, 3)
    expected = 0.0
    for i in range(5):
      for j in range(i + 1, 5):
        same = (i < 3) == (j < 3)
        c, a = (0.25, 0.7) if same else (0.5, 1.3)
        expected += -c * a * a / (a + np.linalg.norm(pos[i] - pos[j]))
    np.testing.assert_allclose(f(x), expected, rtol=1e-12)
    lap, grad = ops.derivatives(f(ops.seed(x)))
    np.testing.assert_allclose(grad, jax.grad(f)(x), rtol=1e-10)
    np.testing.assert_allclose(lap, jnp.trace(jax.hessian(f)(x)), rtol=1e-10)


def test_jastrow_slopes_are_the_kato_cusps():
  """dJ/dr at r = 0 is 1/2 for an opposite-spin pair and 1/4 for a same-spin pair."""
  with enable_x64(True):
    for nspins, slope in (((1, 1), 0.5), ((2, 0), 0.25)):
      f = _jastrow(nspins, 2.0, 2.0)
      j = lambda r, f=f: f(jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, r]))
      np.testing.assert_allclose(jax.grad(j)(1e-12), slope, rtol=1e-9)
