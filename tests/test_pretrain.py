import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmc import checkpoint, config as config_lib, networks, parallel, pretrain, systems, train
from vmc.errors import ConfigError


@pytest.fixture(scope='module')
def li_hf():
  return pretrain.hartree_fock(systems.make_system(atom='Li'), 'ccpvdz', 'uhf')


def test_hf_energy_of_li_and_lih():
  li = pretrain.hartree_fock(systems.make_system(atom='Li'), 'ccpvdz', 'uhf')
  assert li.method == 'UHF'
  np.testing.assert_allclose(li.energy, -7.43242, atol=1e-5)  # research/deps.md
  lih = pretrain.hartree_fock(systems.make_system(molecule='LiH'), 'ccpvdz', 'uhf')
  assert lih.method == 'RHF'
  np.testing.assert_allclose(lih.energy, -7.98362, atol=1e-5)


def test_hf_energy_from_density_matrix_of_stored_orbitals(li_hf):
  from pyscf import scf
  dms = [c[:, :n] @ c[:, :n].T for c, n in zip(li_hf.mo_coeff, li_hf.nspins, strict=True)]
  energy = scf.UHF(li_hf.mol).energy_tot(dm=np.stack(dms))
  np.testing.assert_allclose(energy, li_hf.energy, atol=1e-8)


def test_hf_orbitals_are_orthonormal_on_a_quadrature_grid(li_hf):
  """Every electron at the same grid point: sum_g w_g phi_k(r_g) phi_l(r_g) = delta_kl."""
  from pyscf.dft import gen_grid
  grid = gen_grid.Grids(li_hf.mol)
  grid.level = 4
  grid.build()
  x = np.tile(grid.coords, (1, 3))  # (G, 9): 3 electrons at r_g
  up, down = li_hf.orbitals(x)
  assert up.shape == (len(grid.weights), 2, 2) and down.shape == (len(grid.weights), 1, 1)
  for block in (up, down):
    phi = block[:, 0, :].astype(np.float64)  # (G, n_orbitals) at electron 0 of the spin
    overlap = phi.T @ (grid.weights[:, None] * phi)
    np.testing.assert_allclose(overlap, np.eye(phi.shape[1]), atol=2e-5)
  # Rows are electrons: electron i of a spin block sees the orbitals at its own position.
  y = np.random.default_rng(0).normal(size=(4, 9))
  up, down = li_hf.orbitals(y)
  ao = li_hf.mol.eval_gto('GTOval_sph', y.reshape(-1, 3)).reshape(4, 3, -1)
  np.testing.assert_allclose(up[:, 1, :], ao[:, 1] @ li_hf.mo_coeff[0][:, :2], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(down[:, 0, 0], ao[:, 2] @ li_hf.mo_coeff[1][:, 0], rtol=1e-5,
                             atol=1e-6)


def test_dense_target_is_block_diagonal():
  up = jnp.ones((5, 2, 2))
  down = 2 * jnp.ones((5, 1, 1))
  (target,) = pretrain.target_orbitals([up, down], True, (2, 1))
  assert target.shape == (5, 3, 3)
  np.testing.assert_array_equal(target[0], [[1, 1, 0], [1, 1, 0], [0, 0, 2]])
  blocks = pretrain.target_orbitals([up, down], False, (2, 1))
  assert [b.shape for b in blocks] == [(5, 2, 2), (5, 1, 1)]


def test_scf_result_is_cached(tmp_path, monkeypatch):
  system = systems.make_system(atom='Be')
  first = pretrain.hartree_fock(system, 'sto-3g', cache_dir=str(tmp_path))
  from pyscf import scf
  monkeypatch.setattr(scf, 'RHF', lambda mol: pytest.fail('SCF ran again'))
  second = pretrain.hartree_fock(system, 'sto-3g', cache_dir=str(tmp_path))
  assert second.energy == first.energy
  np.testing.assert_array_equal(second.mo_coeff, first.mo_coeff)


def test_basis_without_the_element_is_a_config_error():
  with pytest.raises(ConfigError, match="pretrain.basis='6-31g'"):
    pretrain.check_basis(systems.make_system(atom='Kr'), '6-31g')


@pytest.mark.slow
@pytest.mark.parametrize('system_kw, full_det', [
    (dict(atom='Li'), True), (dict(molecule='LiH'), False)])
def test_pretraining_fits_hf_orbitals_then_vmc_starts_near_hf(
    tmp_path, make_tiny_config, system_kw, full_det):
  cfg = make_tiny_config(**{'network.full_det': full_det, 'batch_size': 128})
  cfg.system.atom = system_kw.get('atom', '')
  cfg.system.molecule = system_kw.get('molecule')
  cfg.pretrain.method = 'hf'
  cfg.pretrain.iterations = 300
  cfg.optim.iterations = 5
  cfg.log.save_path = str(tmp_path / 'run')
  spec = config_lib.resolve(cfg)
  result = train.run(spec)
  hf = pretrain.hartree_fock(spec.system, cfg.pretrain.basis)
  # Network orbitals against HF orbitals at fresh points around the nuclei.
  network = networks.make_network(spec.system, spec.network)
  params = parallel.first(result.final_state.params)
  centre = spec.system.positions[np.arange(spec.system.n_electrons) % len(spec.system.atoms)]
  x = (centre[None] + np.random.default_rng(1).normal(size=(64,) + centre.shape)).reshape(64, -1)
  targets = pretrain.target_orbitals(hf.orbitals(x), full_det, spec.system.electrons)
  blocks = jax.vmap(network.orbitals, in_axes=(None, 0))(params, jnp.asarray(x, jnp.float32))
  if full_det:
    blocks = [jnp.concatenate(blocks, axis=2)]
  for b, t in zip(blocks, targets, strict=True):
    rel = float(jnp.linalg.norm(b - t[:, None])
                / jnp.linalg.norm(jnp.broadcast_to(t[:, None], b.shape)))
    assert rel < 0.2, rel
  # The first VMC energies (after 5 KFAC steps from the pretrained network) are near HF.
  assert abs(result.energies[0] - hf.energy) < 0.3, (result.energies[:3], hf.energy)
  assert (tmp_path / 'run' / 'pretrain_stats.csv').exists()
  assert (tmp_path / 'run' / 'hf_orbitals.npz').exists()


def test_scf_failure_is_an_error_before_anything_is_written(tmp_path, make_tiny_config,
                                                            monkeypatch):
  def no_convergence(mol, name, basis, method):
    raise ConfigError(f'PySCF {method}/{basis} did not converge for {name}; try another '
                      'pretrain.basis')
  monkeypatch.setattr(pretrain, '_solve', no_convergence)
  cfg = make_tiny_config('He', 'adam', **{'pretrain.method': 'hf'})
  cfg.log.save_path = str(tmp_path / 'run')
  with pytest.raises(ConfigError, match='did not converge'):
    train.run(config_lib.resolve(cfg))
  assert not (tmp_path / 'run').exists()


def test_non_finite_pretraining_is_a_one_line_error(tmp_path, make_tiny_config, monkeypatch):
  real = pretrain.target_orbitals
  monkeypatch.setattr(pretrain, 'target_orbitals',
                      lambda *a: [t * jnp.nan for t in real(*a)])
  cfg = make_tiny_config('He', 'adam', **{'pretrain.method': 'hf', 'pretrain.iterations': 3})
  cfg.log.save_path = str(tmp_path / 'run')
  with pytest.raises(train.RunAborted, match=r'pretraining loss is nan at iteration 0: lower '
                     'pretrain.lr'):
    train.run(config_lib.resolve(cfg))


@pytest.mark.slow
def test_sigterm_during_pretraining_stops_cleanly_and_the_rerun_starts_it_again(tmp_path):
  import os
  import signal
  import subprocess
  import sys
  import time
  out = tmp_path / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'vmc', '--config.batch_size=32', '--config.mcmc.burn_in=2',
         '--config.network.determinants=1', '--config.network.ferminet.hidden_dims=((8, 4),)',
         '--config.debug.deterministic=True', '--config.optim.iterations=2',
         '--config.optim.optimizer=adam', f'--config.log.save_path={out}']
  log = open(tmp_path / 'stderr.txt', 'w+')  # a file: a full pipe would block the run
  proc = subprocess.Popen(cmd + ['--config.pretrain.iterations=100000'], env=env,
                          cwd=tmp_path, stderr=log, text=True)
  stats = out / 'pretrain_stats.csv'
  deadline = time.time() + 300
  while time.time() < deadline and (not stats.exists() or len(stats.read_text().splitlines()) < 4):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=120)
  log.seek(0)
  err = log.read()
  assert proc.returncode == 0, err[-2000:]
  assert 'stopped by SIGTERM during pretraining' in err
  assert (out / 'hf_orbitals.npz').exists() and not list(out.glob('ckpt_*'))
  rerun = subprocess.run(cmd + ['--config.pretrain.iterations=5'], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert 'Hartree-Fock orbitals loaded' in rerun.stderr
  rows = stats.read_text().splitlines()
  assert rows[0].startswith('step,') and [r.split(',')[0] for r in rows[1:]] == [
      '0', '1', '2', '3', '4']
  assert [s for s, _ in checkpoint.list_checkpoints(str(out))] == [0, 2]


def test_ecp_atoms_get_the_ecp_basis_and_a_missing_one_is_a_config_error():
  nacl = systems.make_system(molecule=[('Na', (0, 0, 0)), ('Cl', (0, 0, 4.46))],
                             pseudopotential='ccecp', pp_symbols=('Na',))
  mol = pretrain._molecule(nacl, 'sto-3g', 'ccecp-cc-pvdz')
  assert mol.nelectron == 18 and sorted(mol._ecp) == ['Na']  # Na: 1 valence electron
  with pytest.raises(ConfigError, match="system.pp.basis='no-such-basis'"):
    pretrain.check_basis(nacl, 'sto-3g', 'no-such-basis')
