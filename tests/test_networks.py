import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmc import networks, systems
from vmc.networks import ferminet


def _net(system, make_tiny_config, full_det):
  cfg = make_tiny_config(**{'network.full_det': full_det, 'network.determinants': 3})
  net = networks.make_network(system, cfg)
  params = net.init(jax.random.PRNGKey(1))
  return net, params


def _swap(x, i, j):
  pos = np.array(x).reshape(-1, 3)
  pos[[i, j]] = pos[[j, i]]
  return jnp.asarray(pos.reshape(-1))


@pytest.mark.parametrize('full_det', [True, False])
@pytest.mark.parametrize('system', [
    systems.make_system(atom='C'),  # (4, 2)
    systems.make_system(molecule='LiH'),  # (2, 2)
])
def test_antisymmetric_under_same_spin_exchange(system, full_det, make_tiny_config):
  net, params = _net(system, make_tiny_config, full_det)
  x = jax.random.normal(jax.random.PRNGKey(2), (system.n_electrons * 3,))
  sign, logabs = net.apply(params, x)
  n_up = system.electrons[0]
  for i, j in [(0, 1), (n_up, n_up + 1)]:
    sign_p, logabs_p = net.apply(params, _swap(x, i, j))
    assert float(sign_p) == -float(sign)
    np.testing.assert_allclose(logabs_p, logabs, rtol=1e-5, atol=1e-5)


def test_opposite_spin_exchange_is_not_a_symmetry(make_tiny_config):
  system = systems.make_system(atom='Be')
  net, params = _net(system, make_tiny_config, True)
  x = jax.random.normal(jax.random.PRNGKey(3), (12,))
  _, a = net.apply(params, x)
  _, b = net.apply(params, _swap(x, 0, 2))
  assert abs(float(a) - float(b)) > 1e-4


def test_orbitals_shapes(make_tiny_config):
  system = systems.make_system(atom='Li')
  for full_det, widths in [(True, (3, 3)), (False, (2, 1))]:
    net, params = _net(system, make_tiny_config, full_det)
    blocks = net.orbitals(params, jnp.ones((9,)))
    assert [b.shape for b in blocks] == [(3, 2, widths[0]), (3, 1, widths[1])]


def test_logdet_sum_is_stable_and_exact():
  signs = jnp.array([1.0, -1.0, 1.0])
  logdets = jnp.array([200.0, 199.0, 150.0])  # exp() would overflow float32
  sign, log = ferminet.logdet_sum(signs, logdets)
  expected = 200.0 + np.log(1 - np.exp(-1.0) + np.exp(-50.0))
  assert float(sign) == 1.0
  np.testing.assert_allclose(log, expected, rtol=1e-6)
  sign, log = ferminet.logdet_sum(jnp.array([-1.0, 1.0]), jnp.array([3.0, 1.0]))
  assert float(sign) == -1.0
  np.testing.assert_allclose(log, np.log(np.exp(3.0) - np.exp(1.0)), rtol=1e-6)


def test_spin_polarized_atom_has_no_down_block(make_tiny_config):
  system = systems.make_system(atom='Li', electrons=(3, 0))
  net, params = _net(system, make_tiny_config, False)
  x = jax.random.normal(jax.random.PRNGKey(4), (9,))
  sign, logabs = net.apply(params, x)
  assert np.isfinite(float(logabs))
  sign_p, _ = net.apply(params, _swap(x, 1, 2))
  assert float(sign_p) == -float(sign)
