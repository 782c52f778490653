"""Runs that never lose work: exact resume, preemption, corrupt checkpoints, NaN steps."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import requires_kfac, xla_flags
from vmc import analysis, checkpoint, config as config_lib, hamiltonian, iteration, loss
from vmc import spec as spec_lib
from vmc import optimizers, parallel, train


def _cfg(make_tiny_config, path, iterations, optimizer='adam', **kw):
  cfg = make_tiny_config('He', optimizer, **kw)
  cfg.optim.iterations = iterations
  cfg.log.save_path = str(path)
  return cfg


def _params(result):
  return jax.tree_util.tree_leaves(parallel.first(result.final_state.params))


@pytest.mark.slow
@pytest.mark.parametrize('optimizer', [pytest.param(n, marks=requires_kfac()) if n == 'kfac' else n
                                       for n in spec_lib.OPTIMIZERS])
def test_resume_is_bit_exact(tmp_path, make_tiny_config, optimizer):
  runs = [(tmp_path / 'a', 12), (tmp_path / 'b', 5), (tmp_path / 'b', 12)]
  straight, _, resumed = (
      train.run(config_lib.resolve(_cfg(make_tiny_config, path, n, optimizer)))
      for path, n in runs)
  for x, y in zip(_params(straight), _params(resumed), strict=True):
    np.testing.assert_array_equal(x, y)
  a, b = (analysis.read_stats(str(p), analysis.stats_file(str(p)))
          for p in (tmp_path / 'a', tmp_path / 'b'))
  np.testing.assert_array_equal(b['step'], np.arange(12))
  for column in ('energy', 'ewmean', 'variance', 'pmove', 'move_width', 'learning_rate'):
    np.testing.assert_array_equal(a[column], b[column], err_msg=column)


def test_keep_prunes_old_checkpoints(tmp_path, make_tiny_config):
  cfg = _cfg(make_tiny_config, tmp_path, 5, **{'log.save_frequency': 0.0, 'log.keep': 2})
  train.run(config_lib.resolve(cfg))
  assert [s for s, _ in checkpoint.list_checkpoints(str(tmp_path))] == [4, 5]


@pytest.mark.slow
def test_restore_with_another_batch_size_resamples_walkers(tmp_path, make_tiny_config):
  train.run(config_lib.resolve(_cfg(make_tiny_config, tmp_path / 'a', 3)))
  for batch in (32, 96):
    cfg = _cfg(make_tiny_config, tmp_path / f'b{batch}', 5, batch_size=batch)
    cfg.log.restore_path = str(tmp_path / 'a')
    result = train.run(config_lib.resolve(cfg))
    assert result.final_state.mcmc.x.shape[1] == batch
    assert np.all(np.isfinite(result.energies))
    np.testing.assert_array_equal(analysis.read_stats(cfg.log.save_path)['step'], [3, 4])


@pytest.mark.slow
@pytest.mark.parametrize('optimizer', [pytest.param('kfac', marks=requires_kfac()), 'spring'])
def test_non_finite_steps_are_rolled_back_and_the_run_goes_on(make_tiny_config, optimizer):
  """A local energy that is NaN whenever walker 0 lands in a thin slab of space (SPRING's
  direction, in its state, is rolled back with the parameters)."""
  cfg = make_tiny_config('He', optimizer)
  spec = config_lib.resolve(cfg)
  model = iteration.build(spec)
  e_l = hamiltonian.make_local_energy(model.network.apply, spec.system)

  def poisoned(params, x, key=None):
    e = jax.vmap(e_l, in_axes=(None, 0))(params, x)
    bad = jnp.mod(x[0, 0] * 10.0, 1.0) < 0.15
    return e.at[0].set(jnp.where(bad, jnp.nan, e[0]))

  objective = loss.make_objective(model.objective.logabs, poisoned, 5.0)
  trainer = iteration.make_iteration(model.sampler, optimizers.make(spec.optim, objective))
  model = model._replace(iteration=trainer)
  state = iteration.with_opt_state(iteration.init_state(spec, model, jax.random.PRNGKey(0)),
                                   model)
  rejected = 0
  for _ in range(25):
    before = checkpoint.state_fields(state)
    state, stats = trainer.step(state)
    stats = parallel.first(stats)
    after = checkpoint.state_fields(state)
    if stats.rejected:
      rejected += 1
      assert not np.isfinite(stats.energy)
      for name in ('params', 'opt_state', 'walkers', 'width', 'acceptance_sum'):
        for x, y in zip(jax.tree_util.tree_leaves(before[name]),
                        jax.tree_util.tree_leaves(after[name]), strict=True):
          np.testing.assert_array_equal(x, y, err_msg=name)
    else:
      assert np.isfinite(stats.energy)
    assert int(after['step']) == int(before['step']) + 1
  assert 0 < rejected < 20, rejected
  for leaf in jax.tree_util.tree_leaves(parallel.first(state.params)):
    assert np.all(np.isfinite(leaf))


def test_too_many_bad_steps_stop_the_run_with_the_checkpoint_intact(
    tmp_path, make_tiny_config, monkeypatch):
  train.run(config_lib.resolve(_cfg(make_tiny_config, tmp_path, 3)))
  ckpt = checkpoint.path_for(str(tmp_path), 3)
  before = open(ckpt, 'rb').read()
  real = hamiltonian.make_local_energy
  monkeypatch.setattr(hamiltonian, 'make_local_energy',
                      lambda *a, **k: (lambda p, x: real(*a, **k)(p, x) * jnp.nan))
  cfg = _cfg(make_tiny_config, tmp_path, 20, **{'debug.max_bad_steps': 3})
  with pytest.raises(train.RunAborted, match='3 non-finite steps in a row at step 5; stopped. No '
                     'step of this run was accepted: the fault is in the state restored from'):
    train.run(config_lib.resolve(cfg))
  assert open(ckpt, 'rb').read() == before
  stats = analysis.read_stats(str(tmp_path))
  np.testing.assert_array_equal(stats['rejected'], [0, 0, 0, 1, 1, 1])


TINY = ['--config.batch_size=32', '--config.mcmc.burn_in=2', '--config.pretrain.method=none',
        '--config.network.determinants=1', '--config.network.ferminet.hidden_dims=((8, 4),)',
        '--config.debug.deterministic=True', '--config.log.print_every_seconds=0']


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_resume_continues_the_statistics(tmp_path):
  out = tmp_path / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'vmc'] + TINY + [f'--config.log.save_path={out}']
  proc = subprocess.Popen(cmd + ['--config.optim.iterations=100000'], env=env, cwd=tmp_path,
                          stderr=subprocess.PIPE, text=True)
  stats = out / 'train_stats.csv'
  deadline = time.time() + 300
  while time.time() < deadline and (not stats.exists() or len(stats.read_text().splitlines()) < 6):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  assert 'stopped by SIGTERM' in err
  step, path = checkpoint.list_checkpoints(str(out))[-1]
  rows = analysis.read_stats(str(out))
  np.testing.assert_array_equal(rows['step'], np.arange(step))
  resumed = subprocess.run(cmd + [f'--config.optim.iterations={step + 5}'], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f'resuming from {path} at step {step}' in resumed.stderr
  np.testing.assert_array_equal(analysis.read_stats(str(out))['step'], np.arange(step + 5))


def test_batch_not_divisible_by_devices_is_an_error(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags(2))
  out = tmp_path / 'run'
  proc = subprocess.run([sys.executable, '-m', 'vmc', '--config.batch_size=33',
                         f'--config.log.save_path={out}'], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert 'batch_size=33 does not divide over 2 devices' in proc.stderr
  assert not out.exists()


def _rewrite(path, header_update, extra):
  """The checkpoint at `path` with its header changed and arrays added."""
  with np.load(path) as data:
    arrays = {k: data[k] for k in data.files}
  header = json.loads(str(arrays['header']))
  header.update(header_update)
  arrays.update(extra, header=np.array(json.dumps(header)))
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


def test_checkpoints_of_the_previous_format_are_still_read(tmp_path):
  """Format vmc-checkpoint-2 stored log|psi| of the walkers as a second walkers leaf; it is
  read, that leaf dropped. A format this vmc does not know is refused, naming both."""
  fields = {'params': {'w': np.arange(6.0).reshape(2, 3)},
            'walkers': np.arange(24.0).reshape(4, 6)}
  templates = {name: np.zeros_like(v) if name == 'walkers' else
               {'w': np.zeros((2, 3))} for name, v in fields.items()}
  path = checkpoint.save(str(tmp_path), 5, fields, '{}')
  _rewrite(path, {'format': 'vmc-checkpoint-2'}, {'walkers/00001': np.ones(4)})
  header, restored = checkpoint.load(path, templates)
  assert header['step'] == 5
  np.testing.assert_array_equal(restored['walkers'], fields['walkers'])
  np.testing.assert_array_equal(restored['params']['w'], fields['params']['w'])
  # The extra leaf would not be accepted in the current format.
  _rewrite(path, {'format': checkpoint.FORMAT}, {})
  with pytest.raises(checkpoint.CheckpointError, match='2 arrays of walkers'):
    checkpoint.load(path, templates)
  _rewrite(path, {'format': 'vmc-checkpoint-9'}, {})
  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.load(path, templates)
  assert "vmc-checkpoint-9" in str(error.value) and checkpoint.FORMAT in str(error.value)
