"""Excited states (NES-VMC, vmc/states.py): known answers of the estimator, the ansatz's
symmetry, the ground state through the excited-state path, restarts and bad values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from vmc import analysis, config as config_lib, hamiltonian, iteration, pretrain, states
from vmc import systems, train
from vmc.errors import ConfigError

HYDROGEN = systems.make_system(atom='H')
# Exact hydrogen eigenstates (unnormalised) and their energies, hartree.
EXACT = {'1s': -0.5, '2s': -0.125, '2pz': -0.125}


def _hydrogen_states(names):
  """(params, x (3,)) -> (signs (K,), log|psi_i| (K,)) of exact hydrogen states."""

  def apply(params, x):
    del params
    r = jnp.linalg.norm(x)
    amp = {'1s': jnp.exp(-r), '2s': (2.0 - r) * jnp.exp(-r / 2), '2pz': x[2] * jnp.exp(-r / 2)}
    values = jnp.stack([amp[n] for n in names])
    return jnp.sign(values), jnp.log(jnp.abs(values))

  return apply


@pytest.mark.parametrize('method', ['loop', 'folx'])
def test_energy_matrix_of_exact_hydrogen_states_is_diagonal_and_exact(method):
  names = ('1s', '2s', '2pz')
  apply = _hydrogen_states(names)
  with enable_x64(True):
    local = hamiltonian.make_local_energy(apply, HYDROGEN, method)
    matrix = jax.jit(hamiltonian.batched_states(local, apply, 3))
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (16, 9), jnp.float64)
    e = np.asarray(matrix(None, x))
  want = np.diag([EXACT[n] for n in names])
  # Every walker, not only on average: exact states make E_L the same matrix everywhere.
  np.testing.assert_allclose(e, np.broadcast_to(want, e.shape), atol=1e-9)


def test_total_wavefunction_is_antisymmetric_under_exchanging_copies_and_states():
  names = ('1s', '2s', '2pz')
  apply = _hydrogen_states(names)
  total = states.total(apply, 3)
  x = jax.random.normal(jax.random.PRNGKey(1), (9,), jnp.float32) + 0.3
  sign, logabs = total(None, x)
  copies = x.reshape(3, 3)
  swapped = copies[jnp.array([1, 0, 2])].reshape(-1)
  s_sw, l_sw = total(None, swapped)
  assert float(s_sw) == -float(sign)
  np.testing.assert_allclose(l_sw, logabs, rtol=1e-6)
  # Exchanging two states (columns) flips the sign as well.
  s_st, l_st = states.total(_hydrogen_states(('2s', '1s', '2pz')), 3)(None, x)
  assert float(s_st) == -float(sign)
  np.testing.assert_allclose(l_st, logabs, rtol=1e-6)
  # A repeated copy gives a zero determinant.
  assert float(total(None, jnp.concatenate([copies[0], copies[0], copies[2]]))[1]) < -30


def test_oscillator_strength_of_hydrogen_1s_2pz_matches_the_exact_value():
  """f(1s -> 2p_z) = 2/3 (3/8) |<1s|z|2p_z>|^2 = 0.1387 (128 sqrt2 / 243 the normalised
  dipole element): from the mean energy and dipole matrices over |Psi|^2, sampled exactly
  by importance sampling (both copies drawn from a radial exponential)."""
  apply = _hydrogen_states(('1s', '2pz'))
  n = 400_000
  rng = np.random.default_rng(0)
  # Proposal: each copy's r ~ Gamma(3, 1/alpha) (density ~ r^2 exp(-alpha r)), direction
  # uniform.
  alpha = 1.0
  r = rng.gamma(3.0, 1.0 / alpha, size=(n, 2))
  u = rng.normal(size=(n, 2, 3))
  pos = u / np.linalg.norm(u, axis=-1, keepdims=True) * r[..., None]
  log_q = np.sum(-alpha * r + 3 * np.log(alpha) - np.log(2.0) - np.log(4 * np.pi), axis=1)
  with enable_x64(True):
    x = jnp.asarray(pos.reshape(n, 6))
    sign, logabs = jax.vmap(states.state_matrix, in_axes=(None, None, 0, None))(apply, None, x,
                                                                             2)
    log_psi2 = 2 * jax.vmap(states.log_det)(sign, logabs)[1]
    w = np.exp(np.asarray(log_psi2) - log_q)
    w /= w.sum()
    local = hamiltonian.make_local_energy(apply, HYDROGEN, 'loop')
    e = hamiltonian.batched_states(local, apply, 2)(None, x[:64])
    d = jax.vmap(states.dipole_matrices)(sign, logabs, x)
  d_mean = np.einsum('n,ncij->cij', w, np.asarray(d))
  e_mean = np.mean(np.asarray(e), axis=0)
  f = states.oscillator_strengths(e_mean, d_mean)
  exact = 2 / 3 * 0.375 * (128 * np.sqrt(2) / 243) ** 2
  assert f[0] == 0.0
  np.testing.assert_allclose(f[1], exact, rtol=0.03)


def test_jackknife_errors_match_the_spread_of_independent_runs():
  """analyse() on noisy matrices around a known one: the eigenvalues within a few error
  bars of the truth, and the jackknife error near the spread over 40 repeats."""
  rng = np.random.default_rng(1)
  truth = np.array([[-2.9, 0.02], [0.01, -2.15]])
  estimates, errors = [], []
  for _ in range(40):
    noise = rng.normal(scale=0.05, size=(400, 2, 2))
    est = states.analyse(truth + noise)
    estimates.append(est.excitations[1])
    errors.append(est.excitation_errors[1])
  spread, mean_error = np.std(estimates), np.mean(errors)
  exact_gap = np.diff(np.sort(np.linalg.eigvals(truth).real))[0]
  assert abs(np.mean(estimates) - exact_gap) < 3 * spread / np.sqrt(40)
  assert 0.7 < mean_error / spread < 1.4


def test_excitations_are_the_lowest_spin_conserving_singles():
  hf = pretrain.hartree_fock(systems.make_system(atom='He'), 'aug-ccpvdz')
  occ = pretrain.excitations(hf, 4)
  assert occ[0] == ((0,), (0,))
  # 1s -> 2s of either spin (degenerate in RHF), then 1s -> 2p.
  assert occ[1:3] == [((1,), (0,)), ((0,), (1,))]
  assert occ[3] in (((2,), (0,)), ((3,), (0,)), ((4,), (0,)))
  with pytest.raises(ConfigError, match='system.states=3 needs 2 single excitations'):
    pretrain.excitations(pretrain.hartree_fock(systems.make_system(atom='He'), 'sto-3g'), 3)


def test_bad_states_values_are_refused(make_tiny_config):
  for value, match in ((-1, 'system.states=-1 must be an integer >= 0'),
                       (17, 'system.states=17: at most 16')):
    cfg = make_tiny_config(**{'system.states': value})
    with pytest.raises(ConfigError, match=match):
      config_lib.resolve(cfg)
  with pytest.raises(ConfigError, match='observables.forces with system.states=2'):
    config_lib.resolve(make_tiny_config(**{'system.states': 2, 'observables.forces': True}))


def test_too_many_states_for_the_pretraining_basis_stop_before_writing(tmp_path,
                                                                       make_tiny_config):
  cfg = make_tiny_config(**{'system.states': 3, 'pretrain.method': 'hf',
                            'pretrain.basis': 'sto-3g', 'log.save_path': str(tmp_path / 'r')})
  with pytest.raises(ConfigError, match='needs 2 single excitations'):
    train.run(config_lib.resolve(cfg))
  assert not (tmp_path / 'r' / 'config.json').exists()


def _run(make_tiny_config, path, iterations, **kw):
  cfg = make_tiny_config(**{'log.save_path': str(path), 'optim.iterations': iterations, **kw})
  return train.run(config_lib.resolve(cfg))


def test_one_state_reproduces_the_ground_state_run(tmp_path, make_tiny_config):
  """states=1 (the excited-state path: det of a 1x1 matrix, a 1x1 energy matrix) gives the
  ground-state run's energies, with the same seed: the first to the bit, the next to the
  float32 rounding of sums taken in another order (KFAC included: its curvature blocks must
  be the same, a generic block instead of a dense one changed the energies by 0.1-0.5 Ha)."""
  ground = _run(make_tiny_config, tmp_path / 'g', 4, **{'debug.seed': 7})
  one = _run(make_tiny_config, tmp_path / 'k1', 4, **{'debug.seed': 7, 'system.states': 1})
  assert one.energies[0] == ground.energies[0]
  np.testing.assert_allclose(one.energies, ground.energies, atol=1e-4)
  stats = analysis.read_stats(str(tmp_path / 'k1'))
  np.testing.assert_array_equal(stats['energy_0'], stats['energy'])
  np.testing.assert_array_equal(stats['E_0_0'], stats['energy'])


@pytest.mark.slow
def test_states_resume_bit_exact_and_summarise(tmp_path, make_tiny_config):
  kw = {'system.states': 2, 'observables.dipole': True, 'debug.seed': 3}
  straight = _run(make_tiny_config, tmp_path / 'a', 8, **kw)
  _run(make_tiny_config, tmp_path / 'b', 3, **kw)
  resumed = _run(make_tiny_config, tmp_path / 'b', 8, **kw)
  np.testing.assert_array_equal(straight.energies, resumed.energies)
  a, b = (analysis.read_stats(str(tmp_path / p)) for p in 'ab')
  assert a.keys() == b.keys()
  for column in a:
    if column != 'wall_time':
      np.testing.assert_array_equal(a[column], b[column], err_msg=column)
  summary = analysis.summarize_run(str(tmp_path / 'b'))
  assert summary['states'] == 2 and len(summary['oscillator_strengths']) == 2
  assert summary['state_energies'][0] <= summary['state_energies'][1]
  assert summary['energy'] == summary['state_energies'][0]


def test_states_run_with_pretraining_and_each_optimizer_step(tmp_path, make_tiny_config):
  """K = 2 from HF excitations (aug-cc-pVDZ), then KFAC-free SPRING steps: finite energies,
  the states ordered, the trace their sum."""
  _run(make_tiny_config, tmp_path / 'p', 5, **{
      'system.states': 2, 'pretrain.method': 'hf', 'pretrain.basis': 'aug-ccpvdz',
      'pretrain.iterations': 20, 'optim.optimizer': 'spring'})
  stats = analysis.read_stats(str(tmp_path / 'p'))
  assert np.all(np.isfinite(stats['energy']))
  assert np.all(stats['energy_0'] <= stats['energy_1'])
  np.testing.assert_allclose(stats['energy_0'] + stats['energy_1'], stats['energy'], rtol=1e-5)
  model = iteration.build(config_lib.resolve(make_tiny_config(**{'system.states': 2})))
  assert model.network.states is not None and model.network.states.k == 2


@pytest.mark.slow
def test_psiformer_states_train(tmp_path, make_tiny_config):
  from conftest import TINY_PSIFORMER
  _run(make_tiny_config, tmp_path / 'psi', 3, **{'system.states': 2, **TINY_PSIFORMER})
  stats = analysis.read_stats(str(tmp_path / 'psi'))
  assert np.all(np.isfinite(stats['energy'])) and 'E_1_1' in stats


def test_spin_matrix_of_a_singlet_and_a_triplet_is_diagonal_and_exact():
  """Two electrons (one up, one down): a symmetric spatial function is a singlet (<S^2> =
  0), an antisymmetric one the M_S = 0 triplet (2), at every configuration."""
  def phi(r):
    return jnp.exp(-jnp.linalg.norm(r)), jnp.exp(-0.5 * jnp.linalg.norm(r)) * (r[2] + 0.3)

  def apply(params, x):
    del params
    (a1, b1), (a2, b2) = phi(x[:3]), phi(x[3:])
    values = jnp.stack([a1 * b2 + b1 * a2, a1 * b2 - b1 * a2])
    return jnp.sign(values), jnp.log(jnp.abs(values))

  with enable_x64(True):
    x = jax.random.normal(jax.random.PRNGKey(3), (8, 12), jnp.float64)
    s = jax.vmap(lambda y: states.spin_matrix(apply, None, y, 2, (1, 1)))(x)
  np.testing.assert_allclose(s, np.broadcast_to(np.diag([0.0, 2.0]), s.shape), atol=1e-9)
  est = states.analyse(np.broadcast_to(np.diag([-1.0, -0.5]), (40, 2, 2)),
                       spins=np.asarray(s[:1].repeat(40, 0)))
  np.testing.assert_allclose(est.s2, [0.0, 2.0], atol=1e-9)


def test_nonlocal_ecp_term_of_each_state_is_that_states_own(tmp_path, make_tiny_config):
  """With a ccECP (Mg: two valence electrons), the nonlocal term of K = 2 states at each
  copy is, column by column, the one-state term of each state's wavefunction (the same
  random rotations); and a K = 2 run with the ECP trains."""
  from vmc import networks, pseudopotential
  cfg = make_tiny_config('Mg', **{'system.use_pp': True, 'system.states': 2})
  spec = config_lib.resolve(cfg)
  net = networks.make_network(spec.system, spec.network, 2)
  params = net.init(jax.random.PRNGKey(0))
  x = 1.5 * jax.random.normal(jax.random.PRNGKey(4), (6, 6), jnp.float32)
  key = jax.random.PRNGKey(5)
  both = pseudopotential.nonlocal_term(net.states.evaluate, spec.system)(params, x, key)
  assert both.shape == (6, 2)
  for i in range(2):
    one = pseudopotential.nonlocal_term(
        lambda p, y, i=i: tuple(a[i] for a in net.states.evaluate(p, y)),
        spec.system)(params, x, key)
    np.testing.assert_allclose(both[:, i], one, rtol=1e-5, atol=1e-6)
  assert np.any(np.abs(np.asarray(both)) > 1e-3)  # the electrons reach the ECP's range
  _run(make_tiny_config, tmp_path / 'mg', 3, **{'system.atom': 'Mg', 'system.use_pp': True,
                                              'system.states': 2})
  assert np.all(np.isfinite(analysis.read_stats(str(tmp_path / 'mg'))['E_1_1']))


def test_rejected_iterations_are_left_out_of_the_state_estimates():
  """A rolled-back iteration writes NaN into its row; the states' estimates skip it."""
  from vmc import writers
  rng = np.random.default_rng(2)
  t = 60
  table = {'energy': rng.normal(-5.0, 0.01, t), 'variance': np.ones(t), 'pmove': np.ones(t),
           'step': np.arange(t), 'wall_time': np.arange(t, dtype=float)}
  for i, j in np.ndindex(2, 2):
    table[f'E_{i}_{j}'] = (-2.9 if i == j == 0 else -2.1 if i == j else 0.0) + rng.normal(
        0, 0.01, t)
  for i in range(2):
    table[f'energy_{i}'] = np.zeros(t)
  table['E_0_1'][7] = np.nan
  assert writers.states_of(table) == 2
  out = analysis.summarize_stats(table, window=1.0)
  assert out['state_iterations'] == t - 1
  np.testing.assert_allclose(out['state_energies'], [-2.9, -2.1], atol=0.01)


def test_a_window_of_rejected_iterations_gives_no_estimate_and_no_traceback():
  """All iterations of the window rolled back (their rows NaN): the lowest state's energy
  is NaN, which the run reports in one line (vmc.train: 'not finite')."""
  from vmc import writers
  t = 10
  table = {'energy': np.full(t, np.nan), 'variance': np.ones(t), 'pmove': np.ones(t),
           'step': np.arange(t), 'wall_time': np.arange(t, dtype=float)}
  for i, j in np.ndindex(2, 2):
    table[f'E_{i}_{j}'] = np.full(t, np.nan)
  for i in range(2):
    table[f'energy_{i}'] = np.full(t, np.nan)
  assert writers.states_of(table) == 2
  out = analysis.summarize_stats(table, window=0.5)
  assert out['state_iterations'] == 0 and np.isnan(out['energy'])
  assert np.all(np.isnan(out['state_energies']))
  assert analysis.strict_json(out)['energy'] is None
  assert 'nan' in '\n'.join(analysis.state_lines(out))  # the log's table, without a traceback


def test_warm_start_from_a_run_with_other_states_is_refused(tmp_path, make_tiny_config):
  _run(make_tiny_config, tmp_path / 'g', 2)
  cfg = make_tiny_config(**{'system.states': 2, 'log.restore_path': str(tmp_path / 'g'),
                            'log.save_path': str(tmp_path / 'k2'), 'optim.iterations': 4})
  with pytest.raises(ConfigError, match='system.states'):
    train.run(config_lib.resolve(cfg))
  assert not (tmp_path / 'k2' / 'config.json').exists()
