"""Observables and evaluation runs: estimators on wavefunctions with known answers, then
short evaluation runs of HF-pretrained networks."""

import importlib.metadata
import json
import os
import types

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmc import analysis, config as config_lib, observables, parallel, systems
from vmc import runtime, train
from vmc.errors import ConfigError


def _evaluate(system, cfg, apply, x):
  network = types.SimpleNamespace(apply=apply, states=None)  # no forces here
  obs = observables.make(network, None, system, config_lib.resolve(cfg).observables)
  x = parallel.shard(np.asarray(x, np.float32))
  return parallel.first(obs.evaluate(parallel.replicate({}), x)), obs


def _config(**observables_cfg):
  cfg = config_lib.default()
  cfg.system.atom = 'He'  # only the observables section is read
  for key, value in observables_cfg.items():
    cfg.observables[key] = value
  return cfg


def _orbital(a):
  return lambda r: jnp.exp(-a * jnp.linalg.norm(r))


@pytest.mark.parametrize('parity, s2', [(1.0, 0.0), (-1.0, 2.0)])
def test_s2_of_two_electron_singlet_and_triplet_is_exact_on_every_walker(parity, s2):
  """psi = f(r1) g(r2) + parity f(r2) g(r1) for one up and one down electron: a singlet
  (symmetric space) has S^2 = 0, the S_z = 0 triplet (antisymmetric space) 2."""
  f, g = _orbital(1.0), _orbital(0.5)

  def apply(params, x):
    r = x.reshape(2, 3)
    psi = f(r[0]) * g(r[1]) + parity * f(r[1]) * g(r[0])
    return jnp.sign(psi), jnp.log(jnp.abs(psi))

  system = systems.make_system(atom='He')
  x = np.random.default_rng(0).normal(size=(8, 6))
  values, obs = _evaluate(system, _config(s2=True), apply, x)
  assert obs.columns == ('s2',)
  np.testing.assert_allclose(values['s2'], s2, atol=1e-5)


def test_dipole_and_radial_density_of_fixed_electrons():
  system = systems.make_system(molecule='LiH')  # Li at 0, H at (0, 0, 3.015)
  # 4 electrons: three at the Li nucleus, one 1 bohr beyond H. Nuclear part (0, 0,
  # 3.015); electronic part -(0, 0, 4.015): d = (0, 0, -1).
  x = np.zeros((2, 12), np.float32)
  x[:, 11] = 4.015
  cfg = _config(dipole=True, density='radial', density_bins=80, density_extent=8.0)
  values, obs = _evaluate(system, cfg, lambda p, y: (1.0, 0.0), x)
  np.testing.assert_allclose(values['dipole'], [0.0, 0.0, -1.0], atol=1e-5)
  assert observables.row_values(values) == pytest.approx(
      {'dipole_x': 0.0, 'dipole_y': 0.0, 'dipole_z': -1.0}, abs=1e-5)
  width = obs.attrs['radial_edges'][1]
  up, down = values['radial_density']
  assert up.sum() * width == pytest.approx(2.0) and down.sum() * width == pytest.approx(2.0)
  # Centre of nuclear charge: z = 3.015 / 4. Down electrons at 0 and at 4.015.
  centre = 3.015 / 4
  assert down[int(centre / width)] * width == pytest.approx(1.0)
  assert down[int((4.015 - centre) / width)] * width == pytest.approx(1.0)


def test_grid_density_counts_every_electron_in_its_cell():
  system = systems.make_system(atom='Li')
  x = np.array([[0.1, 0.1, 0.1, -1.1, 0.3, 0.3, 0.6, -0.6, 2.2]], np.float32)
  cfg = _config(density='grid', density_bins=10, density_extent=2.5)  # 0.5 bohr cells
  values, obs = _evaluate(system, cfg, lambda p, y: (1.0, 0.0), x)
  up, down = values['grid_density'] * 0.5 ** 3  # electrons per cell
  assert up.sum() == pytest.approx(2.0) and down.sum() == pytest.approx(1.0)
  assert up[5, 5, 5] == pytest.approx(1.0) and up[2, 5, 5] == pytest.approx(1.0)
  assert down[6, 3, 9] == pytest.approx(1.0)
  np.testing.assert_allclose(obs.attrs['grid_edges'][[0, -1]], [-2.5, 2.5])


def _evaluation(tiny_config, tmp_path, name, pretrain_iterations, **overrides):
  """An HF-pretrained tiny network, sampled (optimizer none) with all observables."""
  cfg = tiny_config('He', 'none', batch_size=128, **{
      'pretrain.method': 'hf', 'pretrain.iterations': pretrain_iterations,
      'optim.iterations': 100, 'mcmc.burn_in': 20, 'mcmc.steps': 10,
      'observables.dipole': True, 'observables.s2': True, **overrides})
  cfg.log.save_path = str(tmp_path / name)
  train.run(config_lib.resolve(cfg))
  with open(os.path.join(cfg.log.save_path, 'summary.json')) as f:
    return json.load(f), cfg


@pytest.mark.slow
def test_lih_dipole_points_from_h_to_li_and_h2_has_none(tmp_path, make_tiny_config):
  lih, cfg = _evaluation(make_tiny_config, tmp_path, 'lih', 200, **{
      'system.molecule': 'LiH', 'system.atom': '', 'observables.forces': True})
  dx, dy, dz = lih['dipole_au']
  ex, ey, ez = lih['dipole_error_au']
  # Li+ H-: the dipole points from H (at +z) to Li, so d_z < 0; |d| = 2.31 a.u.
  # (5.88 D, experiment) and 2.34 a.u. for HF/cc-pVDZ (PySCF).
  assert -2.9 < dz < -1.9, lih
  assert abs(dx) < 4 * ex + 0.05 and abs(dy) < 4 * ey + 0.05
  h2, _ = _evaluation(make_tiny_config, tmp_path, 'h2', 100, **{
      'system.molecule': 'H2', 'system.atom': '', 'observables.forces': True})
  for d, e in zip(h2['dipole_au'], h2['dipole_error_au'], strict=True):
    assert abs(d) < 4 * e + 0.02, h2
  assert h2['s2'] < 0.05 and lih['s2'] < 0.05  # closed shells: singlets, nearly

  # Forces: zvzb is the derivative of a translation-invariant energy, so the forces on a
  # molecule sum to zero (for a diatomic: equal and opposite) within their errors.
  for s in (lih, h2):
    assert s['forces_units'] == 'hartree/bohr' and s['forces_iterations'] == 100
    f, e = np.array(s['forces_zvzb']), np.array(s['forces_zvzb_error'])
    assert f.shape == (2, 3) and np.all(e > 0) and np.all(e < 0.2), s
    assert np.all(np.abs(f.sum(0)) < 4 * np.hypot(e[0], e[1])), s
  with h5py.File(os.path.join(cfg.log.save_path, 'observables.h5')) as f:
    assert f['forces_zvzb'].shape == (100, 2, 3)
    np.testing.assert_allclose(f['forces_zvzb_mean'][:], lih['forces_zvzb'], rtol=1e-5)
    np.testing.assert_allclose(f['forces_zvzb_error'][:], lih['forces_zvzb_error'], rtol=1e-5)
    assert [a.decode() for a in f['atoms'][:]] == ['Li', 'H']
  # Provenance of the result.
  prov = lih['provenance']
  assert prov['versions']['jax'] == jax.__version__
  assert prov['versions']['kfac-jax'] == importlib.metadata.version('kfac-jax')
  assert prov['runtime'] == runtime.describe() and prov['runtime']['lapack'] != 'not configured'
  assert prov['devices']['count'] >= 1 and prov['seed'] == 23
  assert prov['config']['system']['molecule'] == 'LiH' and prov['units']['force'] == (
      'hartree/bohr')


@pytest.mark.slow
def test_li_evaluation_s2_density_and_outputs(tmp_path, make_tiny_config):
  summary, cfg = _evaluation(make_tiny_config, tmp_path, 'li', 100, **{'system.atom': 'Li',
                                                      'observables.density': 'radial'})
  assert summary['mode'] == 'evaluation' and summary['iterations'] == 100
  assert abs(summary['s2'] - 0.75) < 0.05, summary  # a doublet, nearly pure
  assert summary['energy_error'] > summary['energy_naive_error'] * 0.5
  run = cfg.log.save_path
  stats = analysis.read_stats(run, 'eval_stats.csv')
  np.testing.assert_array_equal(stats['step'], np.arange(100))
  assert not os.path.exists(os.path.join(run, 'train_stats.csv'))
  with h5py.File(os.path.join(run, 'observables.h5')) as f:
    density = f['radial_density_mean'][:]
    width = f['radial_edges'][1] - f['radial_edges'][0]
    assert f['radial_density'].shape == (100, 2, 100)
    np.testing.assert_array_equal(f['step'][:], np.arange(100))
  np.testing.assert_allclose(density.sum(axis=1) * width, [2.0, 1.0], atol=0.01)

  # Resuming with other observables would misalign the CSV: refused, nothing changed.
  cfg.optim.iterations = 120
  cfg.observables.s2 = False
  with pytest.raises(ConfigError, match='other observables'):
    train.run(config_lib.resolve(cfg))
  assert len(analysis.read_stats(run, 'eval_stats.csv')['step']) == 100
