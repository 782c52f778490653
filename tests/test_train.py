"""Whole runs: a few tiny training runs through the real loop, and the command line."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import NETWORK_VARIANTS, TINY_PSIFORMER, requires_kfac
from vmc import analysis, checkpoint, config as config_lib, iteration, parallel, train
from vmc import start, writers
from vmc.errors import ConfigError


def _run(cfg, tmp_path, name):
  cfg.log.save_path = str(tmp_path / name)
  return train.run(config_lib.resolve(cfg))


def _rows(path):
  with open(os.path.join(path, 'train_stats.csv')) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
@requires_kfac()
def test_kfac_lowers_helium_energy_and_writes_outputs(tmp_path, make_tiny_config):
  cfg = make_tiny_config('He', 'kfac', batch_size=128)
  cfg.optim.iterations = 80
  result = _run(cfg, tmp_path, 'kfac')
  e = result.energies
  assert np.all(np.isfinite(e))
  # A random network starts far above -2.9037; 80 KFAC steps must gain > 0.2 Ha.
  assert e[-10:].mean() < e[:5].mean() - 0.2, (e[:5], e[-10:])
  assert e[-10:].mean() > -2.95  # and not below the exact energy by more than noise

  rows = _rows(result.save_path)
  assert list(rows[0]) == list(writers.TRAIN_COLUMNS)
  assert [int(r['step']) for r in rows] == list(range(80))
  np.testing.assert_allclose([float(r['energy']) for r in rows], e)
  assert all(0.0 < float(r['pmove']) <= 1.0 for r in rows)
  assert float(rows[-1]['learning_rate']) < float(rows[0]['learning_rate'])
  with open(os.path.join(result.save_path, 'config.json')) as f:
    assert json.load(f)['system']['atom'] == 'He'
  # One checkpoint at the first training step, one at the end.
  assert [s for s, _ in checkpoint.list_checkpoints(result.save_path)] == [0, 80]
  path = checkpoint.list_checkpoints(result.save_path)[-1][1]
  expected = checkpoint.state_fields(result.final_state)
  header, restored = checkpoint.load(path, expected)
  assert header['step'] == 80 and header['burned_in']
  for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(expected),
                  strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@requires_kfac()
def test_kfac_lowers_helium_energy_with_the_psiformer(tmp_path, make_tiny_config):
  cfg = make_tiny_config('He', 'kfac', batch_size=128, **TINY_PSIFORMER)
  cfg.optim.iterations = 80
  e = _run(cfg, tmp_path, 'psiformer').energies
  assert np.all(np.isfinite(e))
  assert e[-10:].mean() < e[:5].mean() - 0.2, (e[:5], e[-10:])
  assert e[-10:].mean() > -2.95


# The plain FermiNet and Psiformer train in the tests above.
OTHER_VARIANTS = [(n, v) for n, v in NETWORK_VARIANTS if n not in ('ferminet', 'psiformer')]


@pytest.mark.slow
@requires_kfac()
@pytest.mark.parametrize('variant', [v for _, v in OTHER_VARIANTS],
                         ids=[name for name, _ in OTHER_VARIANTS])
def test_kfac_steps_every_network_option(variant, tmp_path, make_tiny_config):
  cfg = make_tiny_config('Li', 'kfac', **variant)
  cfg.optim.iterations = 4
  result = _run(cfg, tmp_path, 'run')
  assert np.all(np.isfinite(result.energies))
  assert [int(r['rejected']) for r in _rows(result.save_path)] == [0] * 4
  spec = config_lib.resolve(cfg)
  network = iteration.build(spec).network
  k_params = jax.random.split(jax.random.PRNGKey(start.seed_of(spec.debug)), 3)[0]  # as init_state
  initial = network.init(k_params)
  final = parallel.first(result.final_state.params)
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(initial),
                                                 jax.tree_util.tree_leaves(final), strict=True)]
  assert all(moved), 'KFAC left some parameters untouched'


@pytest.mark.slow
def test_adam_lowers_helium_energy(tmp_path, make_tiny_config):
  cfg = make_tiny_config('He', 'adam', batch_size=128)
  cfg.optim.iterations = 80
  cfg.optim.lr.rate = 0.01
  e = _run(cfg, tmp_path, 'adam').energies
  assert e[-10:].mean() < e[:5].mean() - 0.2, (e[:5], e[-10:])


@pytest.mark.slow
def test_same_seed_gives_same_numbers_and_none_keeps_parameters(tmp_path, make_tiny_config):
  runs = []
  for i in range(2):
    cfg = make_tiny_config('Li', 'none')
    cfg.optim.iterations = 5
    runs.append(_run(cfg, tmp_path, f'none{i}'))
  np.testing.assert_array_equal(runs[0].energies, runs[1].energies)
  # With optimizer none the parameters stay those of initialization.
  fresh_cfg = make_tiny_config('Li', 'none')
  spec = config_lib.resolve(fresh_cfg)
  model = iteration.build(spec)
  init = iteration.init_state(spec, model, jax.random.PRNGKey(start.seed_of(spec.debug)))
  for a, b in zip(jax.tree_util.tree_leaves(parallel.first(init.params)),
                  jax.tree_util.tree_leaves(parallel.first(runs[0].final_state.params)),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  # A different seed gives different samples.
  cfg = make_tiny_config('Li', 'none')
  cfg.optim.iterations = 5
  cfg.debug.seed = 7
  assert not np.array_equal(_run(cfg, tmp_path, 'none_other').energies, runs[0].energies)


def _vmc(args, cwd):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'vmc'] + args, cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
TINY = ['--config.batch_size=32', '--config.optim.iterations=3', '--config.mcmc.burn_in=2',
        '--config.network.determinants=1', '--config.network.ferminet.hidden_dims=((8, 4),)']


@pytest.mark.slow
def test_cli_runs_and_a_rerun_of_a_finished_run_changes_nothing(tmp_path):
  out = tmp_path / 'run'
  args = TINY + [f'--config.log.save_path={out}', '--config.optim.optimizer=adam']
  proc = _vmc(args, tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'step 3/3' in proc.stderr
  assert len(_rows(str(out))) == 3
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  proc = _vmc(args, tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'is complete at step 3' in proc.stderr
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
@pytest.mark.parametrize('args, message', [
    (['--config.system.atom=Xx'], "unknown element 'Xx'"),
    (['--config.system.atom=Li', '--config.system.spin=2'], 'system.spin=2'),
    (['--config.batch_size=0'], 'batch_size=0 must be a positive integer'),
    (['--config.optim.iterations=-5'], 'optim.iterations=-5'),
    (['--config.optim.optimizer=sgd'], "optim.optimizer='sgd'"),
    (['--config.optim.learning_rate=0.1'], '--config.optim.learning_rate: no such config key'),
    (['--config.optim.lr.ratee=0.1'], 'did you mean optim.lr.rate?'),
    ([f'--config={CONFIGS}/forces.py', '--config.optim.iteratons=3'],
     'did you mean optim.iterations?'),  # a mistyped key on top of a config file
    (['--config=nonexistent_config.py'], '--config nonexistent_config.py: no such file'),
    (['--config.system.atom=H', '--config.system.charge=-3', '--config.pretrain.basis=sto-3g'],
     "pretrain.basis='sto-3g' has 1 orbitals for H, too few for its 2 electrons"),
    (['--config.observables.density=grid', '--config.observables.density_bins=2000'],
     'density_bins=2000: a grid of 2000^3 cells per spin cannot be indexed'),
    (['--config.observables.density=grid', '--config.observables.density_bins=400',
      '--config.optim.iterations=100000'], 'density_bins=400 needs about'),
    (['--config.batch_size=many'], 'batch_size'),
    (['--config.log.restore_path=/nonexistent/run'], 'log.restore_path=/nonexistent/run'),
    (['--config.no_such_key=1'], '--config.no_such_key: no such config key'),
    (['--config.mcmc.steps=100000000000000000000'], 'mcmc.steps=100000000000000000000 must'),
    (['--config.system.atom=', "--config.system.molecule=(('H',(0,0,0)),('H',(0,0,0)))"],
     'atoms 1 (H) and 2 (H) are 0 bohr apart'),
    # A repeated flag replaces (ml_collections would append to a tuple: ((8, 4), (16.5, 4))).
    (['--config.network.ferminet.hidden_dims=((8,4),)',
      '--config.network.ferminet.hidden_dims=((16.5,4),)'], 'hidden_dims=((16.5, 4),) must'),
    (['--config=raising_config.py'], 'the config file raised RuntimeError: no such system'),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
  out = tmp_path / 'run'
  (tmp_path / 'raising_config.py').write_text(
      'def get_config():\n  raise RuntimeError("no such system")\n')
  proc = _vmc(args + [f'--config.log.save_path={out}'], tmp_path)
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith('vmc: error:')]
  assert len(errors) == 1 and message in errors[0], proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not out.exists()


def test_a_missing_config_file_alone_is_one_line(tmp_path):
  """With no --config.KEY after it, ml_collections loads the file only when the job asks
  for it (a 45-line traceback before)."""
  proc = _vmc(['--config', 'nowhere.py'], tmp_path)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      'vmc: error: --config nowhere.py: no such file (configs/ has the shipped ones)')


def test_restore_path_continues_from_checkpoint(tmp_path, make_tiny_config):
  cfg = make_tiny_config('He', 'adam')
  cfg.optim.iterations = 4
  first = _run(cfg, tmp_path, 'first')
  cfg = make_tiny_config('He', 'adam')
  cfg.optim.iterations = 7
  cfg.log.restore_path = first.save_path
  second = _run(cfg, tmp_path, 'second')
  assert [int(r['step']) for r in _rows(second.save_path)] == [4, 5, 6]
  assert int(parallel.first(second.final_state.step)) == 7
  # optim.iterations counts on from the restored step: at or below it nothing would
  # train, which is refused before the folder is made (it exited 0 as 'complete').
  cfg = make_tiny_config('He', 'adam')
  cfg.optim.iterations = 4
  cfg.log.restore_path = first.save_path
  with pytest.raises(ConfigError, match='is at step 4, and optim.iterations=4 counts on'):
    _run(cfg, tmp_path, 'again')
  assert not list(tmp_path.glob('again/*.csv')) and not list(tmp_path.glob('again/ckpt_*'))
  cfg = make_tiny_config('He', 'adam', **{'network.determinants': 3})
  cfg.log.restore_path = first.save_path
  with pytest.raises(ConfigError, match='different network'):
    _run(cfg, tmp_path, 'third')
  assert not (tmp_path / 'third').exists()


@pytest.mark.slow
@requires_kfac()
def test_restore_path_from_another_optimizer_takes_all_but_its_state(tmp_path,
                                                                     make_tiny_config):
  cfg = make_tiny_config('He', 'kfac')
  cfg.optim.iterations = 4
  trained = _run(cfg, tmp_path, 'kfac')
  # Sampling the trained wavefunction (evaluation): kfac's state is not needed.
  cfg = make_tiny_config('He', 'none')
  cfg.optim.iterations = 7
  cfg.log.restore_path = trained.save_path
  frozen = _run(cfg, tmp_path, 'none')
  # An evaluation counts its own iterations and writes eval_stats.csv and a summary.
  stats = analysis.read_stats(frozen.save_path, 'eval_stats.csv')
  np.testing.assert_array_equal(stats['step'], np.arange(7))
  with open(os.path.join(frozen.save_path, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['mode'] == 'evaluation' and summary['window_iterations'] == 7
  for a, b in zip(jax.tree_util.tree_leaves(parallel.first(trained.final_state.params)),
                  jax.tree_util.tree_leaves(parallel.first(frozen.final_state.params)),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  # And back to KFAC, with a fresh optimizer state for the restored parameters.
  cfg = make_tiny_config('He', 'kfac')
  cfg.optim.iterations = 10
  cfg.log.restore_path = frozen.save_path
  again = _run(cfg, tmp_path, 'kfac_again')
  assert np.all(np.isfinite(again.energies)) and len(again.energies) == 3
  # Resuming a run's own folder stays strict: another optimizer there is an error.
  cfg = make_tiny_config('He', 'adam')
  cfg.optim.iterations = 9
  with pytest.raises(ConfigError, match='different network or optimizer'):
    _run(cfg, tmp_path, 'kfac')
