"""Geometry handling, the relaxation step, and scans as datasets (tiny runs)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import slow_after_first
from vmc import geometry, scans, train
from vmc.errors import ConfigError


def test_walkers_move_with_their_nearest_nucleus():
  old = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
  new = np.array([[0.0, 0.0, -0.1], [0.0, 0.0, 2.3]])
  x = np.array([[0.1, 0.0, 0.2, 0.0, 0.5, 1.8], [0.0, 0.0, 1.1, 0.0, 0.0, 0.9]], np.float32)
  moved = geometry.move_walkers(x, old, new)
  assert moved.dtype == np.float32
  np.testing.assert_allclose(moved, [[0.1, 0.0, 0.1, 0.0, 0.5, 2.1],
                                     [0.0, 0.0, 1.4, 0.0, 0.0, 0.8]], atol=1e-6)


def _harmonic_diatomic(r, k=0.066, r0=3.015):
  """Forces of E = k/2 (R - r0)^2 on two atoms along z."""
  f = -k * (r - r0)
  return np.array([[0.0, 0.0, -f], [0.0, 0.0, f]])


def test_relaxation_of_a_soft_bond_with_noisy_forces_converges():
  """A LiH-like soft bond (k = 0.066 Ha/bohr^2) from R = 2.8 with force noise of 1e-3:
  the quasi-Newton steps learn the curvature and end within 0.05 bohr of the minimum,
  where the forces are zero within their error bars."""
  rng = np.random.default_rng(0)
  opts = geometry.RelaxOptions()
  state = geometry.RelaxState()
  x = np.array([[0, 0, 0], [0, 0, 2.8]], float)
  errors = np.full((2, 3), 1e-3)
  for step in range(15):  # noqa: B007  (read after the loop)
    r = x[1, 2] - x[0, 2]
    f = _harmonic_diatomic(r) + rng.normal(scale=1e-3, size=(2, 3))
    if geometry.converged(f, errors):
      break
    state, x = geometry.relax_step(state, x, f, errors, opts)
    assert np.max(np.linalg.norm(x - state.positions, axis=1)) <= opts.trust_radius + 1e-12
  assert abs(r - 3.015) < 0.05 and step < 12, (r, step)
  assert state.updates >= 1
  # No net translation.
  np.testing.assert_allclose(x.mean(0) - [0, 0, 1.4], 0.0, atol=1e-9)


def test_a_secant_within_the_noise_does_not_update_the_hessian_and_keeps_its_anchor():
  opts = geometry.RelaxOptions()
  f = np.array([[0, 0, -1e-3], [0, 0, 1e-3]])
  err = np.full((2, 3), 5e-3)
  start = np.array([[0, 0, 0], [0, 0, 1.4]])
  state, x = geometry.relax_step(geometry.RelaxState(), start, f, err, opts)
  state, x = geometry.relax_step(state, x, -f, err, opts)
  assert state.updates == 0 and state.skipped == 1
  np.testing.assert_allclose(state.hessian, 0.5 * np.eye(6))
  np.testing.assert_allclose(state.positions, start)  # the next secant starts there


def test_translation_free_forces_weigh_by_precision():
  """A diatomic with a precise H force and a noisy Li one: the net force goes to Li, and
  both get the inverse-variance combination's error."""
  forces = np.array([[0.0, 0.0, -0.030], [0.0, 0.0, 0.010]])  # Li (noisy), H
  errors = np.array([[5e-3, 5e-3, 5e-3], [1e-3, 1e-3, 1e-3]])
  f, err = geometry.translation_free(forces, errors)
  np.testing.assert_allclose(f.sum(0), 0.0, atol=1e-15)
  combined = 1 / np.sqrt(1 / 5e-3 ** 2 + 1 / 1e-3 ** 2)
  np.testing.assert_allclose(err, combined)
  # f_H = (var_Li F_H - var_H F_Li) / (var_Li + var_H): H's value, pulled a little.
  np.testing.assert_allclose(f[1, 2], (25 * 0.010 + 0.030) / 26)
  assert geometry.converged(np.array([[0, 0, -0.02], [0, 0, 1e-3]]), errors)
  assert not geometry.converged(np.array([[0, 0, 0.0], [0, 0, 3e-3]]), errors)


@pytest.fixture(scope='module')
def h2_scan(tmp_path_factory):
  """A two-point H2 scan with tiny runs, warm-started."""
  from conftest import tiny_config
  cfg = tiny_config('He', batch_size=64, **{'optim.iterations': 8})
  cfg.system.atom = ''
  cfg.system.molecule = 'H2'
  out = str(tmp_path_factory.mktemp('scan'))
  geoms = [geometry.diatomic(('H', 'H'), r) for r in (1.3, 1.5)]
  plan = scans.PointPlan(warm_iterations=4, eval_iterations=12)
  points = scans.scan(cfg, geoms, out, plan)
  return cfg, geoms, out, plan, points


@pytest.mark.slow
def test_scan_writes_json_and_extxyz_that_ase_reads(h2_scan):
  ase_io = pytest.importorskip('ase.io')
  from ase import units
  _, _, out, _, points = h2_scan
  with open(os.path.join(out, 'scan.json')) as f:
    record = json.load(f)
  assert record['units']['forces'] == 'hartree/bohr' and len(record['points']) == 2
  assert record['provenance']['versions']['jax'] == jax.__version__
  first, second = record['points']
  assert first['warm_start_from'] is None
  assert second['warm_start_from'].endswith(os.path.join('point_000', 'train'))
  assert first['train_iterations'] == 8 and second['train_iterations'] == 4
  assert second['eval_iterations'] == 12
  frames = ase_io.read(os.path.join(out, 'scan.extxyz'), index=':')
  assert len(frames) == 2
  for frame, p in zip(frames, points, strict=True):
    assert frame.get_potential_energy() == pytest.approx(p['energy'] * units.Hartree)
    np.testing.assert_allclose(frame.get_forces(),
                               np.array(p['forces']) * units.Hartree / units.Bohr, rtol=1e-6)
    np.testing.assert_allclose(frame.arrays['forces_error'],
                               np.array(p['forces_error']) * units.Hartree / units.Bohr,
                               rtol=1e-6)
    assert frame.info['energy_error'] == pytest.approx(p['energy_error'] * units.Hartree)
    np.testing.assert_allclose(frame.positions[1, 2] / units.Bohr, p['positions'][1][2])
  # The warm-started point's walkers were moved with the nuclei (see its log) and its
  # run restored from the neighbour: its train folder records where it came from.
  with open(os.path.join(out, 'point_001', 'train', 'config.json')) as f:
    assert json.load(f)['log']['restore_path'].endswith(os.path.join('point_000', 'train'))


def test_a_resumed_scan_recomputes_nothing_finished(h2_scan, monkeypatch):
  cfg, geoms, out, plan, points = h2_scan
  # As if killed during the second point's evaluation.
  evaluation = os.path.join(out, 'point_001', 'eval')
  for name in os.listdir(evaluation):
    os.remove(os.path.join(evaluation, name))
  calls = []
  real_run = train.run
  monkeypatch.setattr(train, 'run', lambda spec: calls.append(spec.log.save_path) or
                      real_run(spec))
  again = scans.scan(cfg, geoms, out, plan)
  # point_000 untouched; point_001's finished training only reopened, its evaluation redone.
  assert calls == [os.path.join(out, 'point_001', 'train'), evaluation]
  assert again[0] == points[0]
  assert again[1]['eval_iterations'] == 12


def test_relax_driver_resumes_after_a_stop_and_converges(tmp_path, monkeypatch):
  """scans.relax with each point's runs replaced by a harmonic LiH-like bond with noisy
  forces: a stop (a signal during a point) ends the call; the same call continues from
  relax.json without redoing finished steps, and ends converged near the minimum."""
  rng = np.random.default_rng(1)
  calls = []

  def fake_point(base, atoms, folder, warm_from, plan):
    del base, plan
    calls.append(os.path.basename(folder))
    if len(calls) == 3 and not getattr(fake_point, 'stopped', False):
      fake_point.stopped = True
      return None  # stopped by a signal in the third step
    r = atoms[1][1][2] - atoms[0][1][2]
    f = _harmonic_diatomic(r) + rng.normal(scale=1e-3, size=(2, 3))
    return {'symbols': [s for s, _ in atoms], 'positions': [list(c) for _, c in atoms],
            'energy': 0.033 * (r - 3.015) ** 2, 'energy_error': 1e-4, 'forces': f.tolist(),
            'forces_error': np.full((2, 3), 1e-3).tolist(), 'warm_start_from': warm_from}

  monkeypatch.setattr(scans, 'run_point', fake_point)
  start = geometry.diatomic(('Li', 'H'), 2.8)
  plan, opts = scans.PointPlan(), geometry.RelaxOptions()
  assert scans.relax(None, start, str(tmp_path), plan, opts, warm_from='/prior/train') is None
  assert calls == ['step_000', 'step_001', 'step_002']
  record = scans.relax(None, start, str(tmp_path), plan, opts)
  assert calls[3] == 'step_002' and len(calls) == len(record['points']) + 1
  assert record['converged'] and len(record['points']) < 12
  assert record['points'][0]['warm_start_from'] == '/prior/train'
  assert record['points'][1]['warm_start_from'].endswith(os.path.join('step_000', 'train'))
  final = np.array(record['points'][-1]['positions'])
  assert abs(final[1, 2] - final[0, 2] - 3.015) < 0.05
  assert os.path.exists(tmp_path / 'relax.extxyz')
  # A finished relaxation is not run again.
  assert scans.relax(None, start, str(tmp_path), plan, opts)['converged']
  assert len(calls) == len(record['points']) + 1


def test_a_scan_with_other_geometries_in_the_same_folder_is_refused(h2_scan):
  cfg, geoms, out, plan, _ = h2_scan
  moved = [geometry.diatomic(('H', 'H'), 1.35)] + geoms[1:]
  with pytest.raises(ConfigError, match='geometries differ'):
    scans.scan(cfg, moved, out, plan)


# --- The drivers at the door: every flag checked before anything trains. ---------------

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts')
H2 = ['--config.system.atom=', '--config.system.molecule=H2', '--config.batch_size=16',
      '--config.optim.iterations=2', '--config.pretrain.iterations=2']
DRIVER_CASES = [
    ('relax.py', ['--trust_radius=-0.2'], '--trust_radius=-0.2: must be a finite number'),
    ('relax.py', ['--hessian_guess=0'], '--hessian_guess=0.0: must be a finite number'),
    ('relax.py', ['--sigmas=nan'], '--sigmas=nan: must be a finite number'),
    ('relax.py', ['--step_tolerance=-1'], '--step_tolerance=-1.0: must be'),
    ('relax.py', ['--max_steps=0'], '--max_steps=0: must be 1 or more'),
    ('relax.py', ['--eval_iterations=2'], '--eval_iterations=2: must be at least 20'),
    ('relax.py', ['--warm_from=/nowhere/run'], '--warm_from=/nowhere/run: no such folder'),
    ('relax.py', ['--bond_length=inf'], '--bond_length=inf: must be a finite number'),
    ('scan.py', ['--bond_lengths=1.4,inf'], 'every bond length must be a finite number'),
    ('scan.py', ['--bond_lengths=1.4', '--eval_iterations=-1'],
     '--eval_iterations=-1: must be at least 1'),
    ('scan.py', ['--bond_lengths=1.4', '--warm_iterations=-5'],
     '--warm_iterations=-5: must be 1 or more'),
    ('scan.py', ['--bond_lengths=1.4', '--config.optim.iteratons=3'],
     'did you mean optim.iterations?'),
]


@pytest.mark.parametrize('script, args, message', slow_after_first(DRIVER_CASES))
def test_driver_bad_flags_are_one_line_before_anything_runs(tmp_path, script, args, message):
  out = tmp_path / 'out'
  proc = subprocess.run(
      [sys.executable, os.path.join(SCRIPTS, script), f'--out={out}'] + H2 + args,
      cwd=tmp_path, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('vmc: error:')]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr and not out.exists()


def test_driver_checks_of_the_output_and_warm_start_folders(tmp_path):
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(ConfigError, match='is a file, not a folder'):
    scans.check_out(str(tmp_path / 'a_file'))
  with pytest.raises(ConfigError, match='give --out FOLDER'):
    scans.check_out('')
  scans.check_out(str(tmp_path / 'new'))  # not there yet: fine
  (tmp_path / 'empty_run').mkdir()
  with pytest.raises(ConfigError, match='holds no checkpoint'):
    scans.check_warm_from(str(tmp_path / 'empty_run'))


def test_records_of_a_short_evaluation_say_there_is_no_error_bar(tmp_path):
  """An evaluation too short to reblock has null error bars: the JSON keeps null and the
  extxyz says so, instead of a crash after all the work (None * float before)."""
  ase_io = pytest.importorskip('ase.io')
  point = {'symbols': ['H', 'H'], 'positions': [[0, 0, 0], [0, 0, 1.4]], 'energy': -1.1,
           'energy_error': None, 'forces': [[0, 0, 0.1], [0, 0, -0.1]],
           'forces_error': [[None] * 3] * 2}
  scans.write_records(str(tmp_path), 'scan', [point], {'kind': 'scan'})
  assert json.load(open(tmp_path / 'scan.json'))['points'][0]['energy_error'] is None
  frame = ase_io.read(str(tmp_path / 'scan.extxyz'))
  assert 'too few evaluation iterations' in frame.info['energy_error']
  assert 'forces_error' not in frame.arrays
  assert frame.get_potential_energy() == pytest.approx(-1.1 * 27.211386, rel=1e-6)


def test_a_damaged_relax_record_is_set_aside_and_rebuilt(tmp_path, monkeypatch):
  """relax.json cut short: set aside as relax.json.corrupt, the trajectory rebuilt from
  the steps (run_point reuses finished steps; here a fake that counts its calls)."""
  calls = []

  def fake_point(base, atoms, folder, warm_from, plan):
    calls.append(os.path.basename(folder))
    r = atoms[1][1][2] - atoms[0][1][2]
    return {'symbols': ['Li', 'H'], 'positions': [list(c) for _, c in atoms],
            'energy': 0.0, 'energy_error': 1e-4,
            'forces': _harmonic_diatomic(r).tolist(),
            'forces_error': np.full((2, 3), 1e-3).tolist(), 'warm_start_from': warm_from}

  monkeypatch.setattr(scans, 'run_point', fake_point)
  start = geometry.diatomic(('Li', 'H'), 2.8)
  plan, opts = scans.PointPlan(), geometry.RelaxOptions()
  first = scans.relax(None, start, str(tmp_path), plan, opts, max_steps=2)
  (tmp_path / 'relax.json').write_text('{"points": [')
  again = scans.relax(None, start, str(tmp_path), plan, opts, max_steps=2)
  assert (tmp_path / 'relax.json.corrupt').read_text() == '{"points": ['
  assert again['points'] == first['points'] and again['next_positions'] == first['next_positions']


@pytest.mark.slow
def test_a_longer_evaluation_asked_of_a_finished_scan_continues_it(h2_scan):
  """The same scan with more --eval_iterations continues each point's evaluation from its
  checkpoint (a finished point used to be reused as it was, whatever was asked)."""
  cfg, geoms, out, plan, _ = h2_scan
  longer = scans.PointPlan(warm_iterations=plan.warm_iterations,
                           eval_iterations=plan.eval_iterations + 4)
  points = scans.scan(cfg, geoms, out, longer)
  assert [p['eval_iterations'] for p in points] == [plan.eval_iterations + 4] * 2
  assert [p['train_iterations'] for p in points] == [8, 4]  # training untouched
  # A damaged summary of a finished point is set aside and written again from its
  # statistics (a RuntimeError before: 'finished without a summary.json').
  summary = os.path.join(out, 'point_000', 'eval', 'summary.json')
  with open(summary, 'w') as f:
    f.write('{"energy": ')
  again = scans.scan(cfg, geoms, out, longer)
  assert os.path.exists(summary + '.corrupt')
  assert again[0]['energy'] == points[0]['energy']
  assert again[0]['forces'] == points[0]['forces']
