"""The Laplacian methods agree: forward (every network's own, vmc.networks.ops), folx and
the loop of jvps, in float64 to 1e-9 (round-off, 1e-16 per operation, grown by the few
thousand operations of a tiny network, stays far below)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from conftest import (NETWORK_VARIANTS, TINY_PSIFORMER, make_network, requires_kfac,
                      slow_after_first)
from vmc import hamiltonian, networks, systems, train
from vmc.networks import orbitals
from vmc import config as config_lib, spec as spec_lib

CASES = [
    (dict(atom='Li'), True),
    (dict(molecule='LiH'), False),
    (dict(atom='H', electrons=(1, 0)), True),  # no down electrons, no pairs
    (dict(atom='N', electrons=(7, 0)), False),  # spin-polarized, one spin channel
    (dict(molecule='H2'), True),
    # NaH with a ccECP on Na only: a softened distance at one nucleus, the plain one at H.
    (dict(molecule=[('Na', (0, 0, 0)), ('H', (0, 0, 3.6))], pseudopotential='ccecp'), True),
]


def _random_net(system, full_det, make_tiny_config, dtype, **overrides):
  cfg = make_tiny_config(**{'network.full_det': full_det, **overrides})
  # Three layers, with residual connections in both streams and a width change.
  cfg.network.ferminet.hidden_dims = ((12, 4), (12, 4), (12, 6))
  net = make_network(system, cfg)
  params = net.init(jax.random.PRNGKey(0))
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  # Perturb every parameter (envelopes start at exactly 1) so no term is trivially zero.
  leaves = [(a + 0.3 * jax.random.normal(k, a.shape)).astype(dtype)
            for a, k in zip(leaves, keys, strict=True)]
  return net, jax.tree_util.tree_unflatten(tree, leaves)


@pytest.mark.parametrize('kwargs,full_det', slow_after_first(CASES))
def test_forward_laplacian_matches_loop_in_float64(kwargs, full_det, make_tiny_config):
  system = systems.make_system(**kwargs)
  with enable_x64(True):
    net, params = _random_net(system, full_det, make_tiny_config, jnp.float64)
    x = 1.3 * jax.random.normal(jax.random.PRNGKey(2), (4, system.n_electrons * 3), jnp.float64)
    loop = jax.vmap(lambda y: hamiltonian.laplacian_loop(lambda z: net.apply(params, z)[1], y))
    lap_ref, grad_ref = jax.jit(loop)(x)
    lap, grad = jax.jit(jax.vmap(net.laplacian, in_axes=(None, 0)))(params, x)
    np.testing.assert_allclose(lap, lap_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-9, atol=1e-9)


# Every network and head option is written once, in vmc.networks.ops, and its forward
# Laplacian is checked against the loop here; test_every_option_is_checked fails when a
# new option (of the head, or a network) is not.
LAPLACIAN_VARIANTS = NETWORK_VARIANTS[1:] + [
    ('ferminet_bias_orbitals', {'network.bias_orbitals': True})]
CHECKED = [(v, i % 2 == 0) for i, (_, v) in enumerate(LAPLACIAN_VARIANTS)]


def test_every_option_is_checked(make_tiny_config):
  """Each value of each HeadOptions field, and each network type, appears in a case
  checked above or below."""
  values = {'full_det': (True, False), 'envelope_type': spec_lib.ENVELOPE_TYPES,
            'envelope_shared': (True, False), 'bias_orbitals': (True, False),
            'jastrow': ('none', 'simple_ee'), 'determinants': (2,), 'states': (0, 2)}
  assert set(values) == set(orbitals.HeadOptions._fields), 'a head option is not checked'
  covered = {('states', 0)} | {('states', k) for k, _ in STATES_CASES}
  networks_seen = set()
  for variant, full_det in CHECKED + [({}, True), ({}, False)]:  # + CASES' default network
    spec = config_lib.resolve(make_tiny_config(**{'network.full_det': full_det, **variant}))
    networks_seen.add(spec.network.network_type)
    covered |= {(k, getattr(spec.network, k)) for k in values if k != 'states'}
  assert covered == {(k, v) for k, vs in values.items() for v in vs}
  assert networks_seen == set(spec_lib.NETWORK_TYPES), "a network is not checked"


STATES_CASES = [(2, True), (2, False)]  # (states, full_det)


@pytest.mark.parametrize('states,full_det,network', slow_after_first(
    [(*case, {}) for case in STATES_CASES] + [(2, True, TINY_PSIFORMER)],
    ids=['ferminet_dense', 'ferminet_blocks', 'psiformer']))
def test_forward_laplacian_of_states_matches_loop_in_float64(states, full_det, network,
                                                             make_tiny_config):
  """K excited states: (K,) Laplacians and (K, 3N) gradients of every state, against the
  loop and folx over the vector of log|psi_i|, with a Jastrow and shared envelopes."""
  system = systems.make_system(molecule='LiH')
  with enable_x64(True):
    cfg = make_tiny_config(**{'network.full_det': full_det, 'network.jastrow': 'simple_ee',
                              'network.envelope_shared': not full_det, **network})
    cfg.network.ferminet.hidden_dims = ((12, 4), (12, 4))
    net = networks.make_network(system, config_lib.resolve(cfg).network, states)
    params = net.init(jax.random.PRNGKey(0))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [
        (a + 0.3 * jax.random.normal(k, a.shape)).astype(jnp.float64)
        for a, k in zip(leaves, keys, strict=True)])
    x = 1.3 * jax.random.normal(jax.random.PRNGKey(2), (3, system.n_electrons * 3), jnp.float64)
    f = lambda z: net.states.apply(params, z)[1]
    lap_ref, grad_ref = jax.jit(jax.vmap(lambda y: hamiltonian.laplacian_loop(f, y)))(x)
    lap, grad = jax.jit(jax.vmap(net.states.laplacian, in_axes=(None, 0)))(params, x)
    lap_folx, grad_folx = jax.jit(jax.vmap(lambda y: hamiltonian.laplacian_folx(f, y)))(x)
    assert lap.shape == (3, states) and grad.shape == (3, states, system.n_electrons * 3)
    for a, b in ((lap, lap_ref), (grad, grad_ref), (lap_folx, lap_ref), (grad_folx, grad_ref)):
      np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    # Each state's values are those of the state's own head.
    np.testing.assert_allclose(net.states.evaluate(params, x[0])[1], f(x[0]), rtol=1e-12)


@pytest.mark.parametrize('variant, full_det', slow_after_first(
    CHECKED, ids=[name for name, _ in LAPLACIAN_VARIANTS]))
def test_every_network_option_has_the_exact_laplacian(variant, full_det, make_tiny_config):
  """Method 'forward' (the network's own) against the loop, float64; its cheaper value
  path (`evaluate`) against `apply`."""
  system = systems.make_system(molecule='LiH')
  with enable_x64(True):
    net, params = _random_net(system, full_det, make_tiny_config, jnp.float64, **variant)
    x = 1.3 * jax.random.normal(jax.random.PRNGKey(2), (3, 12), jnp.float64)
    f = lambda p, y: net.apply(p, y)[1]
    loop = jax.vmap(lambda y: hamiltonian.laplacian_loop(lambda z: f(params, z), y))
    lap_ref, grad_ref = jax.jit(loop)(x)
    lap, grad = jax.jit(jax.vmap(lambda y: net.laplacian(params, y)))(x)
    np.testing.assert_allclose(lap, lap_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(jax.vmap(lambda y: net.evaluate(params, y)[1])(x),
                               jax.vmap(lambda y: f(params, y))(x), rtol=1e-12)


@pytest.mark.slow
def test_float32_methods_are_exact_to_round_off(make_tiny_config):
  """In float32 every method is within round-off of the float64 local energy, measured on
  the scale of the terms that cancel in it (|lap log psi| + |grad log psi|^2, which reach
  1e6 for electrons near a nucleus with these random parameters)."""
  system = systems.make_system(molecule='LiH')
  net, params = _random_net(system, True, make_tiny_config, jnp.float32)
  x = 1.3 * jax.random.normal(jax.random.PRNGKey(3), (16, 12), jnp.float32)
  with enable_x64(True):
    p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    x64 = x.astype(jnp.float64)
    e_l = hamiltonian.make_local_energy(net.apply, system, 'loop')
    exact = np.asarray(jax.jit(jax.vmap(e_l, in_axes=(None, 0)))(p64, x64))
    lap, grad = jax.vmap(net.laplacian, in_axes=(None, 0))(p64, x64)
    scale = np.abs(np.asarray(lap)) + np.sum(np.asarray(grad) ** 2, axis=-1)
  for method in spec_lib.LAPLACIANS:
    e_l = hamiltonian.make_local_energy(net.apply, system, method, net.laplacian)
    e32 = np.asarray(jax.jit(jax.vmap(e_l, in_axes=(None, 0)))(params, x))
    assert np.max(np.abs(e32 - exact) / scale) < 5e-6, method


@pytest.mark.slow
def test_chunked_local_energy_equals_unchunked(make_tiny_config):
  system = systems.make_system(atom='Li')
  net, params = _random_net(system, True, make_tiny_config, jnp.float32)
  e_l = hamiltonian.make_local_energy(net.apply, system, 'forward', net.laplacian)
  x = jax.random.normal(jax.random.PRNGKey(4), (10, 9))
  whole = jax.jit(hamiltonian.batched(e_l, 0))(params, x)
  chunked = jax.jit(hamiltonian.batched(e_l, 4))(params, x)  # 4 + 4 + remainder 2
  # Two separately compiled float32 programs may sum in another order: equal on jax 0.9.1
  # to 1e-6, on jax 0.12 to 1.1e-5 relative (a local energy is a difference of terms 100x
  # larger). A walker in the wrong chunk or a dropped remainder would be off by O(1).
  np.testing.assert_allclose(chunked, whole, rtol=1e-4)


def test_unknown_laplacian_is_a_config_error(make_tiny_config):
  cfg = make_tiny_config(**{'optim.laplacian': 'hessian'})
  with pytest.raises(config_lib.ConfigError, match='optim.laplacian'):
    config_lib.resolve(cfg)


@pytest.mark.parametrize('full_det', [True, False])
def test_evaluate_equals_apply(full_det, make_tiny_config):
  system = systems.make_system(molecule='LiH')
  net, params = _random_net(system, full_det, make_tiny_config, jnp.float32)
  x = 1.3 * jax.random.normal(jax.random.PRNGKey(6), (8, 12), jnp.float32)
  batch = lambda f: jax.jit(jax.vmap(f, in_axes=(None, 0)))(params, x)
  sign, log = batch(net.evaluate)
  sign_ref, log_ref = batch(net.apply)
  np.testing.assert_array_equal(sign, sign_ref)  # the sign too (pseudopotential ratios)
  np.testing.assert_allclose(log, log_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@requires_kfac()
def test_kfac_runs_the_same_with_both_laplacians(tmp_path, make_tiny_config):
  """Under jit, pmap and kfac-jax's compiled step: the first energy (same walkers, same
  parameters) agrees to round-off, and the runs stay together afterwards."""
  energies = {}
  for method in ('loop', 'forward'):  # folx: exact to round-off in the tests above
    cfg = make_tiny_config('Li', 'kfac', **{'optim.laplacian': method, 'optim.iterations': 4})
    cfg.log.save_path = str(tmp_path / method)
    energies[method] = train.run(config_lib.resolve(cfg)).energies
  assert abs(energies['forward'][0] - energies['loop'][0]) < 1e-5 * abs(energies['loop'][0])
  np.testing.assert_allclose(energies['forward'], energies['loop'], rtol=1e-3)
  assert energies['loop'][-1] != energies['loop'][0]  # the parameters did move


def test_automatic_chunks_fit_the_memory_budget():
  # All at once when the estimate fits; else the largest divisor of the walkers that fits.
  assert hamiltonian.auto_chunk_size(256, 1e6, 2 ** 30) == 0
  assert hamiltonian.auto_chunk_size(256, 4.2e6, 2 ** 30) == 128
  assert hamiltonian.auto_chunk_size(300, 4.2e6, 2 ** 30) == 150  # 255 fit
  assert hamiltonian.auto_chunk_size(7, 1e9, 2 ** 30) == 1  # 7 is prime; at least one
  assert hamiltonian.memory_budget('cpu', None) == 2 ** 30
  assert hamiltonian.memory_budget('gpu', 80 * 2 ** 30) == 40 * 2 ** 30
  # 3N tangents for the forward Laplacian, 3 for the loop: N2 with 256-wide layers.
  assert hamiltonian.bytes_per_walker(14, 256, 'forward') == 7 * 4 * 42 * 14 * 256
  assert hamiltonian.bytes_per_walker(14, 256, 'loop') == 7 * 4 * 3 * 14 * 256


def test_local_energy_chunk_of_a_spec():
  from vmc import config as config_lib, iteration
  cfg = config_lib.default()
  cfg.system.molecule, cfg.batch_size = 'N2', 256
  spec = config_lib.resolve(cfg)  # FermiNet's default network: 4.2 MB per walker
  chunk, line = iteration.local_energy_chunk(spec)
  assert chunk == 128 and line.startswith('128 of 256 walkers per device at a time')
  cfg.optim.laplacian = 'loop'
  assert iteration.local_energy_chunk(config_lib.resolve(cfg))[0] == 0
  cfg.optim.laplacian, cfg.network.network_type = 'forward', 'psiformer'
  cfg.network.psiformer.mlp_hidden_dims = (512,)  # the widest layer sets the estimate
  assert iteration.local_energy_chunk(config_lib.resolve(cfg))[0] == 64
  cfg.network.network_type = 'ferminet'
  cfg.optim.laplacian, cfg.optim.local_energy_chunk_size = 'forward', 32
  assert iteration.local_energy_chunk(config_lib.resolve(cfg)) == (
      32, '32 of 256 walkers per device at a time (config)')
  cfg.system.molecule, cfg.system.atom = None, 'He'
  cfg.optim.local_energy_chunk_size = 0
  assert iteration.local_energy_chunk(config_lib.resolve(cfg))[1].startswith(
      'all 256 walkers per device at once')
