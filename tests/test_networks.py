"""The networks' symmetries and options, in float64: an identity that holds in exact
arithmetic is checked to 1e-10 relative (float64 round-off, 1e-16 per operation, grown by
the few hundred operations of a tiny network), so that no tolerance depends on the CPU's
float32 rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import NETWORK_VARIANTS, make_network
from vmc import systems
from vmc.networks import ops

EXACT = 1e-10  # relative; see the module doc


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def _net(system, make_tiny_config, full_det, **overrides):
  """The network and float64 parameters, perturbed from their initial values."""
  cfg = make_tiny_config(**{'network.full_det': full_det, 'network.determinants': 3,
                            **overrides})
  net = make_network(system, cfg)
  params = net.init(jax.random.PRNGKey(1))
  # Envelope and Jastrow parameters start at 1: perturb them so that no option is trivial.
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  leaves = [a.astype(jnp.float64) + 0.2 * jax.random.normal(k, a.shape, jnp.float64)
            for a, k in zip(leaves, keys, strict=True)]
  return net, jax.tree_util.tree_unflatten(tree, leaves)


def _swap(x, i, j):
  pos = np.array(x).reshape(-1, 3)
  pos[[i, j]] = pos[[j, i]]
  return jnp.asarray(pos.reshape(-1))


@pytest.mark.parametrize('full_det', [True, False])
@pytest.mark.parametrize('system', [
    systems.make_system(atom='C'),  # (4, 2)
    systems.make_system(molecule='LiH'),  # (2, 2)
])
@pytest.mark.parametrize('variant', [v for _, v in NETWORK_VARIANTS],
                         ids=[name for name, _ in NETWORK_VARIANTS])
def test_antisymmetric_under_same_spin_exchange(system, full_det, variant, make_tiny_config):
  net, params = _net(system, make_tiny_config, full_det, **variant)
  x = jax.random.normal(jax.random.PRNGKey(2), (system.n_electrons * 3,))
  sign, logabs = net.apply(params, x)
  n_up = system.electrons[0]
  for i, j in [(0, 1), (n_up, n_up + 1)]:
    sign_p, logabs_p = net.apply(params, _swap(x, i, j))
    assert float(sign_p) == -float(sign)
    assert logabs.dtype == jnp.float64
    np.testing.assert_allclose(logabs_p, logabs, rtol=EXACT)


@pytest.mark.parametrize('variant', [v for _, v in NETWORK_VARIANTS],
                         ids=[name for name, _ in NETWORK_VARIANTS])
def test_opposite_spin_exchange_is_not_a_symmetry(variant, make_tiny_config):
  system = systems.make_system(atom='Be')
  net, params = _net(system, make_tiny_config, True, **variant)
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
  signs = jnp.array([1.0, -1.0, 1.0], jnp.float32)
  logdets = jnp.array([200.0, 199.0, 150.0], jnp.float32)  # exp() would overflow float32
  sign, log = ops.logdet_sum(signs, logdets)
  expected = 200.0 + np.log(1 - np.exp(-1.0) + np.exp(-50.0))
  assert float(sign) == 1.0
  np.testing.assert_allclose(log, expected, rtol=1e-6)
  sign, log = ops.logdet_sum(jnp.array([-1.0, 1.0], jnp.float32),
                                  jnp.array([3.0, 1.0], jnp.float32))
  assert log.dtype == jnp.float32
  assert float(sign) == -1.0
  np.testing.assert_allclose(log, np.log(np.exp(3.0) - np.exp(1.0)), rtol=1e-6)


@pytest.mark.parametrize('variant', [v for _, v in NETWORK_VARIANTS],
                         ids=[name for name, _ in NETWORK_VARIANTS])
def test_spin_polarized_atom_has_no_down_block(variant, make_tiny_config):
  system = systems.make_system(atom='Li', electrons=(3, 0))
  net, params = _net(system, make_tiny_config, False, **variant)
  x = jax.random.normal(jax.random.PRNGKey(4), (9,))
  sign, logabs = net.apply(params, x)
  assert np.isfinite(float(logabs))
  sign_p, _ = net.apply(params, _swap(x, 1, 2))
  assert float(sign_p) == -float(sign)


def test_envelope_options_change_the_parameter_shapes(make_tiny_config):
  system = systems.make_system(molecule='LiH')  # 2 atoms, (2, 2) electrons, 4 orbitals
  shapes = {}
  for kind in ('isotropic', 'diagonal'):
    for shared in (False, True):
      net, params = _net(system, make_tiny_config, True, **{
          'network.envelope_type': kind, 'network.envelope_shared': shared})
      env = params['params']['envelope_0']
      shapes[kind, shared] = (env['pi'].shape, env['sigma'].shape)
  assert shapes['isotropic', False] == ((2, 12), (2, 12))  # 3 determinants x 4 orbitals
  assert shapes['isotropic', True] == ((2, 4), (2, 4))
  assert shapes['diagonal', False] == ((2, 12), (2, 3, 12))
  assert shapes['diagonal', True] == ((2, 4), (2, 3, 4))


def test_diagonal_envelope_with_equal_axes_is_the_isotropic_one(make_tiny_config):
  """sigma the same on x, y, z: exp(-|sigma (r - R)|) = exp(-sigma |r - R|)."""
  system = systems.make_system(molecule='LiH')
  iso, p_iso = _net(system, make_tiny_config, True)
  diag, p_diag = _net(system, make_tiny_config, True, **{'network.envelope_type': 'diagonal'})
  for spin in ('envelope_0', 'envelope_1'):
    sigma = p_iso['params'][spin]['sigma']
    p_diag['params'][spin] = {'pi': p_iso['params'][spin]['pi'],
                              'sigma': jnp.repeat(sigma[:, None, :], 3, axis=1)}
  x = jax.random.normal(jax.random.PRNGKey(8), (12,))
  np.testing.assert_allclose(diag.apply(p_diag, x)[1], iso.apply(p_iso, x)[1], rtol=EXACT)


def test_shared_envelope_is_the_same_in_every_determinant(make_tiny_config):
  system = systems.make_system(atom='Li')
  net, params = _net(system, make_tiny_config, True, **{'network.envelope_shared': True})
  x = jax.random.normal(jax.random.PRNGKey(9), (9,))
  # Same orbital weights in every determinant: then the determinants coincide too.
  for spin in ('orbitals_0', 'orbitals_1'):
    w = params['params'][spin]['kernel']
    params['params'][spin]['kernel'] = jnp.tile(w[:, :3], (1, 3))
  blocks = net.orbitals(params, x)
  for block in blocks:
    np.testing.assert_allclose(block[1], block[0], rtol=EXACT)
    np.testing.assert_allclose(block[2], block[0], rtol=EXACT)


def test_jastrow_default_is_simple_ee_for_psiformer_only(make_tiny_config):
  from conftest import TINY_PSIFORMER
  from vmc import config as config_lib
  assert config_lib.resolve(make_tiny_config()).network.jastrow == 'none'
  assert config_lib.resolve(make_tiny_config(**TINY_PSIFORMER)).network.jastrow == 'simple_ee'
  system = systems.make_system(atom='He')
  _, params = _net(system, make_tiny_config, True, **TINY_PSIFORMER)
  assert set(params['params']['jastrow']) == {'ee_par', 'ee_anti'}


@pytest.mark.parametrize('variant', [v for _, v in NETWORK_VARIANTS],
                         ids=[name for name, _ in NETWORK_VARIANTS])
def test_psi_with_moved_nuclei_is_translation_invariant(variant, make_tiny_config):
  """apply with the system's nuclei given as atoms is apply; moving nuclei and electrons together
  leaves psi unchanged, so d log|psi|/dR summed over nuclei is -sum_i grad_i log|psi|
  (what the zvzb forces differentiate)."""
  system = systems.make_system(molecule='LiH')
  net, params = _net(system, make_tiny_config, True, **variant)
  x = jax.random.normal(jax.random.PRNGKey(3), (system.n_electrons * 3,))
  atoms = jnp.asarray(system.positions, jnp.float64)
  np.testing.assert_allclose(net.apply(params, x, atoms)[1], net.apply(params, x)[1],
                             rtol=EXACT)
  shift = jnp.array([0.3, -0.2, 0.5])
  moved = net.apply(params, (x.reshape(-1, 3) + shift).reshape(-1), atoms + shift)
  np.testing.assert_allclose(moved[1], net.apply(params, x)[1], rtol=EXACT)
  assert moved[0] == net.apply(params, x)[0]
  d_atoms, d_x = jax.grad(lambda a, y: net.apply(params, y, a)[1], argnums=(0, 1))(atoms, x)
  assert d_atoms.dtype == jnp.float64
  np.testing.assert_allclose(d_atoms.sum(0), -d_x.reshape(-1, 3).sum(0),
                             atol=EXACT * np.abs(d_x).max())
  assert np.abs(d_atoms).max() > 1e-2  # and not trivially
