"""Pseudopotentials: the quadrature, the rotated estimator, and the whole ECP term pinned
against PySCF's ECP integrals for a Hartree-Fock determinant."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmc import config, ecp_tables, hamiltonian, pseudopotential, spec, systems
from vmc.errors import ConfigError


def _double_factorial(n):
  return math.prod(range(n, 0, -2)) if n > 0 else 1


def _sphere_mean(a, b, c):
  """Exact mean of x^a y^b z^c over the unit sphere."""
  if a % 2 or b % 2 or c % 2:
    return 0.0
  return (_double_factorial(a - 1) * _double_factorial(b - 1) * _double_factorial(c - 1)
          / _double_factorial(a + b + c + 1))


@pytest.mark.parametrize('name', spec.QUADRATURES)
def test_quadrature_exact_up_to_its_degree_and_not_beyond(name):
  """Monomials of degree <= d span the spherical harmonics of l <= d: the rule integrates
  all of them exactly, in every orientation, and fails at degree d + 1 (d is odd)."""
  points, weights, degree = pseudopotential.quadrature(name)
  assert weights.sum() == pytest.approx(1.0, abs=1e-14)
  rot = np.asarray(pseudopotential.random_rotations(jax.random.PRNGKey(3), ()), np.float64)
  rot, _ = np.linalg.qr(rot)  # re-orthonormalised in float64
  for turned in (points, points @ rot.T):
    for a, b, c in itertools.product(range(degree + 2), repeat=3):
      if a + b + c > degree:
        continue
      got = np.sum(weights * turned[:, 0] ** a * turned[:, 1] ** b * turned[:, 2] ** c)
      assert got == pytest.approx(_sphere_mean(a, b, c), abs=1e-12), (name, a, b, c)
  worst = max(abs(np.sum(weights * points[:, 0] ** a * points[:, 1] ** b * points[:, 2] ** c)
                  - _sphere_mean(a, b, c))
              for a, b, c in itertools.product(range(degree + 2), repeat=3)
              if a + b + c == degree + 1)
  assert worst > 1e-4  # not round-off: the rule stops being exact here


def test_random_rotations_are_uniform_rotations():
  rot = np.asarray(pseudopotential.random_rotations(jax.random.PRNGKey(0), (20000,)))
  eye = np.broadcast_to(np.eye(3), rot.shape)
  np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), eye, atol=2e-6)
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=2e-6)
  z = rot[:, :, 2]  # images of the z axis: uniform on the sphere
  np.testing.assert_allclose(z.mean(0), 0.0, atol=4 / np.sqrt(20000))
  np.testing.assert_allclose(z.T @ z / len(z), np.eye(3) / 3, atol=0.015)


def test_rotated_quadrature_is_unbiased_where_the_fixed_one_is_not():
  """<f> over the sphere of f = exp(a . w), |a| = 3 (not a polynomial): the fixed
  12-point rule misses sinh(3)/3 by far more than the statistical error of its mean over
  random rotations, which finds it."""
  a = np.array([1.0, 2.0, 2.0])
  exact = math.sinh(3.0) / 3.0
  points, weights, _ = pseudopotential.quadrature('icosahedron')
  fixed = float(np.sum(weights * np.exp(points @ a)))
  rot = np.asarray(pseudopotential.random_rotations(jax.random.PRNGKey(1), (40000,)),
                   np.float64)
  estimates = np.exp(np.einsum('kj,nij,i->nk', points, rot, a)) @ weights
  error = estimates.std() / np.sqrt(len(estimates))
  assert abs(fixed - exact) > 20 * error
  assert abs(estimates.mean() - exact) < 4 * error


def test_ecp_system_and_config():
  na = systems.make_system(atom='Na', pseudopotential='ccecp')
  assert na.electrons == (1, 0) and na.charges.tolist() == [1.0] and na.charge == 0
  fe = systems.make_system(atom='Fe', pseudopotential='ccecp')
  assert fe.electrons == (10, 6)  # 3s2 3p6 3d6 4s2 outside the [Ne] core: 2S = 4 (Hund)
  nacl = systems.make_system(molecule=[('Na', (0, 0, 0)), ('Cl', (0, 0, 4.46))],
                             pseudopotential='ccecp', pp_symbols=('Cl',))
  assert nacl.charges.tolist() == [11.0, 7.0] and nacl.electrons == (9, 9)
  assert nacl.hamiltonian == 'ccecp[Cl]'
  assert nacl.nuclear_repulsion() == pytest.approx(77 / 4.46)
  cfg = config.default()
  cfg.system.atom = 'S'
  assert config.resolve(cfg).system.hamiltonian == 'all-electron'
  cfg.system.use_pp = True
  spec = config.resolve(cfg)
  assert spec.system.electrons == (4, 2) and spec.pp.quadrature == 'icosahedron'
  assert spec.system.hamiltonian == 'ccecp[S]'
  for key, value, message in [('symbols', ('Cl',), 'Cl, which is not in the system'),
                              ('symbols', ('Xx',), 'unknown element'),
                              ('quadrature', 'lebedev', 'system.pp.quadrature')]:
    bad = config.default()
    bad.system.atom = 'S'
    bad.system.use_pp = True
    bad.system.pp[key] = value
    with pytest.raises(ConfigError, match=message):
      config.resolve(bad)
  cfg.system.atom = 'He'
  with pytest.raises(ConfigError, match='no atom heavier than He'):
    config.resolve(cfg)


# ----------------------------------------------------------------------------------------
# The ECP energy of a Hartree-Fock determinant against PySCF.


def _hf(symbol, pp_basis):
  from pyscf import gto, scf
  mol = gto.M(atom=f'{symbol} 0 0 0', basis=pp_basis, ecp='ccecp', spin=2, verbose=0)
  mf = scf.ROHF(mol).run()
  return mol, mf


def _slater(mol, mo, nspins):
  """(sign, log|psi|) of the ROHF determinant for configurations (..., 3N), in numpy."""
  def numpy_psi(x):
    x = np.asarray(x, np.float64)
    lead = x.shape[:-1]
    pos = x.reshape(-1, sum(nspins), 3)
    sign, log = np.ones(len(pos)), np.zeros(len(pos))
    start = 0
    for n_s in nspins:
      ao = mol.eval_gto('GTOval_sph', pos[:, start:start + n_s].reshape(-1, 3))
      phi = (ao @ mo[:, :n_s]).reshape(len(pos), n_s, n_s)
      s, l = np.linalg.slogdet(phi)
      sign, log, start = sign * s, log + l, start + n_s
    return sign.reshape(lead).astype(np.float32), log.reshape(lead).astype(np.float32)

  def psi(params, x):
    del params
    shape = jax.ShapeDtypeStruct(x.shape[:-1], jnp.float32)
    return jax.pure_callback(numpy_psi, (shape, shape), x, vmap_method='expand_dims')
  return numpy_psi, psi


def _metropolis(numpy_psi, n_el, rng, walkers=3000, steps=400, width=0.6):
  x = rng.normal(size=(walkers, 3 * n_el)) * 1.5
  log = numpy_psi(x)[1]
  for _ in range(steps):
    y = x + width * rng.normal(size=x.shape)
    log_y = numpy_psi(y)[1]
    accept = np.log(rng.uniform(size=walkers)) < 2 * (log_y - log)
    x[accept], log[accept] = y[accept], log_y[accept]
  return x.astype(np.float32)


def test_ecp_energy_of_a_hartree_fock_determinant_matches_pyscf():
  """S (six valence electrons, ROHF triplet, ccECP-cc-pVDZ): the Monte Carlo mean of vmc's
  local and nonlocal ECP terms over |psi_HF|^2 equals PySCF's <psi_HF|V_ECP|psi_HF>, and
  the nonlocal part alone its nonlocal integrals, within 4 standard errors."""
  from pyscf import gto
  mol, mf = _hf('S', 'ccecp-cc-pvdz')
  system = systems.make_system(atom='S', pseudopotential='ccecp')
  nspins = system.electrons
  assert sum(nspins) == mol.nelectron == 6
  dm = mf.make_rdm1()
  total_ref = float(np.einsum('sij,ji->', dm, mol.intor('ECPscalar')))
  local_only = gto.M(atom='S 0 0 0', basis='ccecp-cc-pvdz', spin=2, verbose=0,
                     ecp={'S': [10, [gto.basis.load_ecp('ccecp', 'S')[1][0]]]})
  local_ref = float(np.einsum('sij,ji->', dm, local_only.intor('ECPscalar')))
  numpy_psi, psi = _slater(mol, mf.mo_coeff, nspins)
  x = _metropolis(numpy_psi, 6, np.random.default_rng(0))
  local = np.asarray(jax.vmap(pseudopotential.local_term(system), in_axes=(None, 0))(None, x))
  nonlocal_ = np.asarray(pseudopotential.nonlocal_term(psi, system)(
      None, jnp.asarray(x), jax.random.PRNGKey(2)))
  for values, ref in ((local + nonlocal_, total_ref), (nonlocal_, total_ref - local_ref)):
    error = values.std() / np.sqrt(len(values))
    assert abs(values.mean() - ref) < 4 * error, (values.mean(), ref, error)
  assert abs(nonlocal_.mean()) > 20 * nonlocal_.std() / np.sqrt(len(nonlocal_))


def test_local_energy_adds_the_ecp_terms_with_effective_charges():
  """Na with psi = exp(-r): E_L = T + V(Z_eff = 1) + V_loc + V_NL, and for this spherical
  psi the nonlocal part is v_0(r) alone (P_l>0 average to zero over the rule)."""
  system = systems.make_system(atom='Na', pseudopotential='ccecp')
  psi = lambda params, x: (jnp.ones(()), -jnp.linalg.norm(x))
  e_l = hamiltonian.make_local_energy(psi, system, 'loop',
                                      extra_terms=[pseudopotential.local_term(system)])
  batch = hamiltonian.batched(e_l, 0, [pseudopotential.nonlocal_term(psi, system)])
  x = jnp.array([[0.3, -0.4, 1.2], [1.0, 0.5, -0.2], [6.0, 0.0, 0.0]])
  got = np.asarray(batch(None, x, jax.random.PRNGKey(0)))
  ecp = ecp_tables.load('ccecp', 'Na')
  r = np.linalg.norm(np.asarray(x, np.float64), axis=1)
  inside = r < ecp.cutoff()
  want = (-0.5 + 1 / r - 1 / r + ecp_tables.radial_np(ecp.local, r)
          + inside * ecp_tables.radial_np(ecp.nonlocal_channels[0], r))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_tiny_ecp_run_pretrains_trains_and_reports_its_hamiltonian(tmp_path,
                                                                     make_tiny_config):
  """Mg with ccECP (2 valence electrons): Hartree-Fock in the ccECP basis, training steps
  with the nonlocal term (KFAC's: the runs of docs/pseudopotentials.md), and a summary
  that names the Hamiltonian and takes its reference
  from the ECP table, not the all-electron one."""
  import json
  import os
  from vmc import pretrain, train
  cfg = make_tiny_config('Mg', 'adam')
  cfg.system.use_pp = True
  cfg.optim.iterations = 6
  cfg.log.save_path = str(tmp_path / 'mg')
  spec = config.resolve(cfg)
  # RHF/ccECP-cc-pVDZ of Mg (PySCF): the pretraining target is the valence problem.
  hf = pretrain.hartree_fock(spec.system, spec.pretrain.basis, pp_basis=spec.pp.basis)
  assert hf.energy == pytest.approx(-0.788379, abs=1e-5) and hf.nspins == (1, 1)
  result = train.run(spec)
  assert np.all(np.isfinite(result.energies))
  assert np.all(result.energies > -0.83)  # above the exact -0.8234 (variational, noise)
  with open(os.path.join(result.save_path, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['hamiltonian'] == 'ccecp[Mg]'
  assert summary['reference_kind'] == 'FCI CBS estimate'
  assert summary['reference_energy'] == pytest.approx(-0.8234154)


def test_psi_is_smooth_at_an_ecp_nucleus(make_tiny_config):
  """The ECP is finite at r = 0, so psi needs no cusp there: the networks see a softened
  electron-nucleus distance, and the kinetic energy of an electron approaching the Na
  nucleus converges (a cusp would make it grow like 1/r: ~1e4 Ha apart here)."""
  from conftest import make_network
  system = systems.make_system(atom='Na', pseudopotential='ccecp')
  net = make_network(system, make_tiny_config('Na'))
  params = net.init(jax.random.PRNGKey(0))
  kinetic = hamiltonian.kinetic_energy(net.apply, 'forward', net.laplacian)
  x = jnp.array([1e-2, 1e-3, 1e-4])[:, None] * jnp.array([0.36, -0.48, 0.8])
  t = jax.jit(jax.vmap(kinetic, in_axes=(None, 0)))(params, x)
  assert abs(t[1] - t[0]) < 0.5 and abs(t[2] - t[1]) < 0.05, t


def test_an_ecp_without_nonlocal_channels_has_no_nonlocal_term(make_tiny_config):
  """H's ccECP is a local, softened Coulomb potential (no core, no nonlocal channels):
  system.pp.symbols=H, which vmc's own error for use_pp without heavy atoms suggests,
  runs (it was a traceback in the quadrature) and its local energy is T + V_ee + V_loc
  with the ECP's local channel in place of -1/r at each nucleus."""
  from vmc import iteration
  cfg = make_tiny_config('He', 'adam')
  cfg.system.atom = ''
  cfg.system.molecule = 'H2'
  cfg.system.use_pp = True
  cfg.system.pp.symbols = ('H',)
  spec = config.resolve(cfg)
  assert pseudopotential.ecp_atoms(spec.system) == [0, 1]
  assert pseudopotential.nonlocal_atoms(spec.system) == []
  model = iteration.build(spec)
  params = model.network.init(jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 6))
  got = np.asarray(model.objective.local_energy(params, x, jax.random.PRNGKey(2)))
  plain = hamiltonian.make_local_energy(
      model.network.apply, spec.system, 'loop',
      extra_terms=[pseudopotential.local_term(spec.system)])
  want = np.asarray(jax.vmap(plain, in_axes=(None, 0))(params, x))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
