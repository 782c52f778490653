import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64 as _enable_x64

from vmc import hamiltonian, systems
from conftest import make_network


def enable_x64():
  return _enable_x64(True)


def _points(key, n, dim):
  return jax.random.normal(key, (n, dim)) * 1.5


@pytest.mark.parametrize('z', [1, 2, 3])
def test_hydrogenic_ground_state_is_an_eigenstate(z):
  """psi = exp(-Z r) for a one-electron ion: E_L = -Z^2/2 at every point, zero variance."""
  symbol = {1: 'H', 2: 'He', 3: 'Li'}[z]
  system = systems.make_system(atom=symbol, electrons=(1, 0))
  e_l = hamiltonian.make_local_energy(lambda p, x: (1.0, -z * jnp.linalg.norm(x)), system,
                                      'loop')
  x = _points(jax.random.PRNGKey(0), 512, 3)
  energies = jax.vmap(lambda xi: e_l(None, xi))(x)
  np.testing.assert_allclose(energies, -0.5 * z * z, rtol=2e-5)
  assert float(jnp.var(energies)) < 1e-8


def test_two_electron_product_state_gives_coulomb_term_only():
  """psi = exp(-2 r1 - 2 r2) for He: E_L = -4 + 1/r12 exactly."""
  system = systems.make_system(atom='He')
  psi = lambda p, x: (1.0, -2 * (jnp.linalg.norm(x[:3]) + jnp.linalg.norm(x[3:])))
  e_l = jax.vmap(lambda xi: hamiltonian.make_local_energy(psi, system, 'loop')(None, xi))
  x = _points(jax.random.PRNGKey(1), 256, 6)
  r12 = jnp.linalg.norm(x[:, :3] - x[:, 3:], axis=1)
  np.testing.assert_allclose(e_l(x), -4 + 1 / r12, rtol=1e-4)


def test_potential_energy_by_hand():
  system = systems.make_system(molecule=[('H', (0, 0, 0)), ('Li', (0, 0, 3))],
                               electrons=(1, 1))
  x = jnp.array([0.0, 1.0, 0.0, 0.0, 0.0, 2.0])
  r1 = np.array([0.0, 1.0, 0.0])
  r2 = np.array([0.0, 0.0, 2.0])
  nuclei = [(1.0, np.zeros(3)), (3.0, np.array([0.0, 0.0, 3.0]))]
  expected = sum(-z / np.linalg.norm(r - pos) for z, pos in nuclei for r in (r1, r2))
  expected += 1 / np.linalg.norm(r1 - r2) + 3.0 / 3.0
  v = hamiltonian.coulomb_potential(system)(None, x)
  np.testing.assert_allclose(v, expected, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('full_det', [True, False])
def test_laplacian_matches_hessian_trace_and_finite_differences(full_det, make_tiny_config):
  system = systems.make_system(molecule='LiH')
  cfg = make_tiny_config(**{'network.full_det': full_det})
  with enable_x64():
    net = make_network(system, cfg)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                    net.init(jax.random.PRNGKey(0)))
    x = jax.random.normal(jax.random.PRNGKey(5), (12,), jnp.float64)
    f = lambda y: net.apply(params, y)[1]
    lap, grad = jax.jit(lambda y: hamiltonian.laplacian_loop(f, y))(x)
    np.testing.assert_allclose(lap, jnp.trace(jax.hessian(f)(x)), rtol=1e-10)
    np.testing.assert_allclose(grad, jax.grad(f)(x), rtol=1e-12)
    h = 1e-4
    eye = np.eye(12)
    fd = sum((f(x + h * e) - 2 * f(x) + f(x - h * e)) / h ** 2 for e in eye)
    np.testing.assert_allclose(lap, fd, rtol=1e-5)


@pytest.mark.slow
def test_float32_local_energy_agrees_with_float64(make_tiny_config):
  system = systems.make_system(atom='Li')
  net = make_network(system, make_tiny_config())
  params = net.init(jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(6), (9,))
  e32 = hamiltonian.make_local_energy(net.apply, system, 'loop')(params, x)
  with enable_x64():
    p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    e64 = hamiltonian.make_local_energy(net.apply, system, 'loop')(p64, x.astype(jnp.float64))
  np.testing.assert_allclose(e32, e64, rtol=1e-4)
