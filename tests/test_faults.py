"""Fault injection: what a run survives, and how it says so when it cannot go on.

Each test provokes one fault on a tiny run (the shapes of conftest.tiny_config, so the
compilations are shared with the rest of the suite) and checks that nothing on disk is
lost, that "the same command" continues, and that a failure is one line with the fix.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from vmc import analysis, checkpoint, config as config_lib, hamiltonian, iteration
from vmc import pretrain, runfolder, train
from vmc.errors import ConfigError, RunAborted


def _cfg(make_tiny_config, path, iterations, **kw):
  cfg = make_tiny_config('He', 'adam', **kw)
  cfg.optim.iterations = iterations
  cfg.log.save_path = str(path)
  return cfg


def _run(cfg):
  return train.run(config_lib.resolve(cfg))


def _files(path):
  return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}


def test_a_second_run_on_a_folder_in_use_is_refused_and_a_dead_ones_lock_is_taken(
    tmp_path, make_tiny_config):
  out = tmp_path / 'run'
  _run(_cfg(make_tiny_config, out, 2))
  before = _files(out)
  with runfolder.RunFolderLock(str(out)):  # another run holds the folder
    with pytest.raises(ConfigError, match=f'log.save_path={out} is in use by process '
                       f'{os.getpid()} on '):
      _run(_cfg(make_tiny_config, out, 4))
    assert _files(out) == before | {runfolder.LOCK_NAME: _files(out)[runfolder.LOCK_NAME]}
  # Another process takes the lock (and holds it: refused), then dies by kill -9: the
  # kernel frees its lock, and the run goes on.
  holder = subprocess.Popen([sys.executable, '-c', _HOLD_LOCK, str(out / runfolder.LOCK_NAME)],
                            stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'locked'
  with pytest.raises(ConfigError, match=f'is in use by process {holder.pid} on '):
    _run(_cfg(make_tiny_config, out, 4))
  holder.kill()
  holder.wait()
  assert 'process' in (out / runfolder.LOCK_NAME).read_text()  # its text is still there
  assert _run(_cfg(make_tiny_config, out, 4)).steps == 4


_HOLD_LOCK = """import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, f'process {os.getpid()} on a test host'.encode())
print('locked', flush=True)
time.sleep(600)"""


def test_a_folder_that_cannot_be_used_is_a_one_line_error(tmp_path, make_tiny_config):
  (tmp_path / 'afile').write_text('data')
  with pytest.raises(ConfigError, match='is a file, not a folder'):
    _run(_cfg(make_tiny_config, tmp_path / 'afile', 2))
  with pytest.raises(ConfigError, match='cannot be created'):
    _run(_cfg(make_tiny_config, '/proc/vmc-run', 2))
  assert (tmp_path / 'afile').read_text() == 'data'


def test_unreadable_checkpoints_are_set_aside_for_the_previous_one(tmp_path,
                                                                     make_tiny_config):
  cfg = _cfg(make_tiny_config, tmp_path, 4, **{'log.save_frequency': 0.0, 'log.keep': 10})
  _run(cfg)
  assert [s for s, _ in checkpoint.list_checkpoints(str(tmp_path))] == [0, 1, 2, 3, 4]
  data = open(checkpoint.path_for(str(tmp_path), 4), 'rb').read()
  damage = {4: data[:len(data) // 2],  # truncated
            3: bytes(len(data)),  # zero-filled
            2: b'not a checkpoint at all\n' * 100}  # junk
  for step, content in damage.items():
    open(checkpoint.path_for(str(tmp_path), step), 'wb').write(content)
  result = _run(_cfg(make_tiny_config, tmp_path, 6))
  assert result.steps == 6
  np.testing.assert_array_equal(analysis.read_stats(str(tmp_path))['step'], np.arange(6))
  for step in damage:  # kept for inspection, never taken for a checkpoint again
    assert os.path.exists(checkpoint.path_for(str(tmp_path), step) + '.corrupt')
  # log.restore_path at a file that is not a checkpoint: one line, nothing written.
  cfg = _cfg(make_tiny_config, tmp_path / 'new', 6)
  cfg.log.restore_path = checkpoint.path_for(str(tmp_path), 3) + '.corrupt'
  with pytest.raises(ConfigError, match='cannot restore: .* is unreadable'):
    _run(cfg)
  assert not (tmp_path / 'new').exists()


@pytest.mark.slow
def test_a_checkpoint_of_another_system_is_refused_on_resume_and_warned_on_restore(
    tmp_path, make_tiny_config, caplog):
  _run(_cfg(make_tiny_config, tmp_path / 'he', 2))
  h_minus = {'system.atom': 'H', 'system.charge': -1}
  with pytest.raises(ConfigError, match=r'holds a run of He \(electrons 1 up, 1 down\), not '
                     r'H- \(electrons 1 up, 1 down\)'):
    _run(_cfg(make_tiny_config, tmp_path / 'he', 4, **h_minus))
  cfg = _cfg(make_tiny_config, tmp_path / 'h_minus', 4, **h_minus)
  cfg.log.restore_path = str(tmp_path / 'he')
  result = _run(cfg)
  assert result.steps == 4
  assert 'is a checkpoint of He (electrons 1 up, 1 down), not H-' in caplog.text


def test_sigterm_in_the_scf_and_in_the_burn_in_loses_no_finished_work(
    tmp_path, make_tiny_config, monkeypatch, caplog):
  cfg = _cfg(make_tiny_config, tmp_path, 3, **{'pretrain.method': 'hf',
                                                'pretrain.iterations': 5, 'mcmc.burn_in': 20})
  caplog.set_level(logging.INFO, logger='absl')
  real_hf = pretrain.hartree_fock

  def hf_then_signal(*args, **kwargs):
    hf = real_hf(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return hf
  monkeypatch.setattr(pretrain, 'hartree_fock', hf_then_signal)
  assert _run(cfg).final_state is None
  assert 'stopped by SIGTERM before the run started' in caplog.text
  assert sorted(_files(tmp_path)) == [runfolder.LOCK_NAME, 'hf_orbitals.npz']
  monkeypatch.setattr(pretrain, 'hartree_fock', real_hf)

  real_iteration = iteration.make_iteration

  def burn_in_then_signal(*args, **kwargs):
    it = real_iteration(*args, **kwargs)

    def burn_in(state, n):
      os.kill(os.getpid(), signal.SIGTERM)
      return it.burn_in(state, n)
    return it._replace(burn_in=burn_in)
  monkeypatch.setattr(iteration, 'make_iteration', burn_in_then_signal)
  caplog.clear()
  assert _run(cfg).final_state is None
  assert ('stopped by SIGTERM during burn-in (10 of 20 iterations); the next run redoes '
          'the burn-in') in caplog.text
  (step, path), = checkpoint.list_checkpoints(str(tmp_path))  # the pretrained state
  with np.load(path) as data:
    assert step == 0 and json.loads(str(data['header']))['burned_in'] is False
  monkeypatch.setattr(iteration, 'make_iteration', real_iteration)
  caplog.clear()
  result = _run(cfg)
  assert result.steps == 3 and 'pretraining:' not in caplog.text
  assert 'saved after pretraining, before the burn-in: burn-in follows' in caplog.text
  assert len((tmp_path / 'pretrain_stats.csv').read_text().splitlines()) == 1 + 5


def test_runs_whose_steps_are_all_rejected_end_non_zero_and_name_the_phase(
    tmp_path, make_tiny_config, monkeypatch):
  real = hamiltonian.make_local_energy
  monkeypatch.setattr(hamiltonian, 'make_local_energy',
                      lambda *a, **k: (lambda p, x: real(*a, **k)(p, x) * jnp.nan))
  cfg = _cfg(make_tiny_config, tmp_path, 3)
  with pytest.raises(RunAborted, match='none of the 3 steps of this run was accepted .* the '
                     r'fault is in the fresh initialization \(.*\); the newest checkpoint is '
                     rf'{tmp_path}/ckpt_000000.npz \(step 0\) and holds that state: start '
                     'again with a new log.save_path'):
    _run(cfg)
  assert not (tmp_path / 'summary.json').exists()
  assert [s for s, _ in checkpoint.list_checkpoints(str(tmp_path))] == [0]
  np.testing.assert_array_equal(analysis.read_stats(str(tmp_path))['rejected'], [1, 1, 1])


def test_summary_json_is_strict_json():
  summary = {'energy': float('nan'), 'error': np.float64(np.inf), 'n': np.int64(3),
             'dipole': np.array([1.0, np.nan]), 'name': 'He', 'ok': np.bool_(True)}
  text = json.dumps(analysis.strict_json(summary), allow_nan=False)
  assert json.loads(text) == {'energy': None, 'error': None, 'n': 3, 'dipole': [1.0, None],
                              'name': 'He', 'ok': True}


def test_lost_statistics_are_warned_about(tmp_path, make_tiny_config, caplog):
  _run(_cfg(make_tiny_config, tmp_path, 3))
  os.remove(tmp_path / 'train_stats.csv')
  assert _run(_cfg(make_tiny_config, tmp_path, 5)).steps == 5
  assert ('train_stats.csv holds no rows, but the checkpoint is at step 3: the statistics '
          'of the steps between are lost') in caplog.text
  np.testing.assert_array_equal(analysis.read_stats(str(tmp_path))['step'], [3, 4])


# ----------------------------------------------------------------------------------------
# Faults that need a process of their own: kill -9 and a full disk.

TINY = ['--config.batch_size=64', '--config.network.determinants=2',
        '--config.network.ferminet.hidden_dims=((16, 4), (16, 4))', '--config.mcmc.steps=5',
        '--config.mcmc.burn_in=10', '--config.optim.optimizer=adam',
        '--config.debug.deterministic=True', '--config.log.print_every_seconds=0']


def _vmc(args, cwd, **kwargs):
  return subprocess.Popen([sys.executable, '-m', 'vmc'] + TINY + args, cwd=cwd,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'), text=True, **kwargs)


def _wait_for_rows(path, rows, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if path.exists() and len(path.read_text().splitlines()) > rows:
      return
    time.sleep(0.1)
  raise AssertionError(f'{path} did not reach {rows} rows (exit code {proc.poll()})')


@pytest.mark.slow
def test_kill_9_before_and_after_the_first_checkpoint_then_the_same_command_finishes(
    tmp_path):
  out = tmp_path / 'run'
  args = ['--config.pretrain.iterations=30', f'--config.log.save_path={out}',
          '--config.log.save_frequency=0']
  log = open(tmp_path / 'stderr.txt', 'w+')  # a file: a full pipe would block the run
  proc = _vmc(args + ['--config.optim.iterations=100000'], tmp_path, stderr=log)
  _wait_for_rows(out / 'pretrain_stats.csv', 3, proc)
  proc.kill()  # in pretraining: no checkpoint yet
  proc.wait()
  assert not checkpoint.list_checkpoints(str(out))
  proc = _vmc(args + ['--config.optim.iterations=100000'], tmp_path, stderr=log)
  _wait_for_rows(out / 'train_stats.csv', 3, proc)
  proc.kill()  # in training
  proc.wait()
  step = checkpoint.list_checkpoints(str(out))[-1][0]
  proc = _vmc(args + [f'--config.optim.iterations={step + 2}'], tmp_path, stderr=log)
  assert proc.wait(timeout=300) == 0
  log.seek(0)
  err = log.read()
  assert f'resuming from {checkpoint.path_for(str(out), step)} at step {step}' in err, err[-3000:]
  np.testing.assert_array_equal(analysis.read_stats(str(out))['step'], np.arange(step + 2))
  pretrain_steps = analysis.read_stats(str(out), 'pretrain_stats.csv')['step']
  np.testing.assert_array_equal(pretrain_steps, np.arange(30))  # each iteration once
  assert json.load(open(out / 'summary.json'))['iterations'] == step + 2


# Runs vmc (argv[1:]) with a limit on the size of any file it writes; a write past the
# limit fails with EFBIG as a write to a full disk fails with ENOSPC. Set in a
# single-threaded wrapper that then execs, not in preexec_fn (this process runs JAX threads).
_LIMITED = """import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2)
os.execv(sys.executable, [sys.executable, '-m', 'vmc'] + sys.argv[2:])"""


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_leaves_the_checkpoints_whole(
    tmp_path, make_tiny_config):
  """The checkpoint that no longer fits fails to write (a file size limit stands in for
  the full disk: the same OSError from write(2), without needing a small filesystem)."""
  out = tmp_path / 'run'
  _run(_cfg(make_tiny_config, out, 3, **{'pretrain.method': 'none'}))
  before = _files(out)
  size = os.path.getsize(checkpoint.path_for(str(out), 3))
  proc = subprocess.run(
      [sys.executable, '-c', _LIMITED, str(size // 2)] + TINY + [
          '--config.pretrain.method=none', f'--config.log.save_path={out}',
          '--config.optim.iterations=6', '--config.log.save_frequency=0'],
      cwd=tmp_path, env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
      text=True, timeout=300)
  err = proc.stderr
  assert proc.returncode == 1, err[-3000:]
  errors = [l for l in err.splitlines() if l.startswith('vmc: error:')]
  assert len(errors) == 1 and 'File too large' in errors[0], err[-3000:]
  assert f'the newest checkpoint, {checkpoint.path_for(str(out), 3)} (step 3), is whole' in (
      errors[0])
  assert 'Traceback' not in err
  assert not list(out.glob('*.tmp'))
  after = _files(out)
  for name in ('ckpt_000000.npz', 'ckpt_000003.npz'):
    assert after[name] == before[name], name
  # With space again, the same command continues from step 3.
  assert _run(_cfg(make_tiny_config, out, 6, **{'pretrain.method': 'none'})).steps == 6
  np.testing.assert_array_equal(analysis.read_stats(str(out))['step'], np.arange(6))


def test_a_statistics_row_cut_short_is_dropped_on_resume(tmp_path):
  from vmc import writers
  path = tmp_path / 'train_stats.csv'
  path.write_text('step,energy,wall_time\n0,-1.5,0.1\n1,-1.6,0.2\n2,-1.7,0.3\n1\x00\x00')
  kept = writers.truncate_csv(str(path), 5)  # a checkpoint past the damage
  assert kept == {'step': [0.0, 1.0, 2.0], 'energy': [-1.5, -1.6, -1.7],
                  'wall_time': [0.1, 0.2, 0.3]}
  assert path.read_text() == 'step,energy,wall_time\n0,-1.5,0.1\n1,-1.6,0.2\n2,-1.7,0.3\n'
  assert writers.truncate_csv(str(path), 2)['step'] == [0.0, 1.0]
  assert not list(tmp_path.glob('*.tmp'))


def test_a_failed_write_in_pretraining_ends_in_one_line(tmp_path, make_tiny_config,
                                                        monkeypatch):
  import errno
  from vmc import writers

  def no_space(self, row):
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(writers.CsvWriter, 'write', no_space)
  cfg = _cfg(make_tiny_config, tmp_path, 3, **{'pretrain.method': 'hf',
                                                'pretrain.iterations': 5})
  with pytest.raises(RunAborted, match='No space left on device; no checkpoint was written '
                     'yet: free space, and the next run starts this one again'):
    _run(cfg)
  assert not list(tmp_path.glob('*.tmp')) and not checkpoint.list_checkpoints(str(tmp_path))


def test_a_damaged_scf_cache_is_set_aside_and_solved_again(tmp_path):
  from vmc import pretrain, systems
  cache = tmp_path / 'hf_orbitals.npz'
  cache.write_bytes(b'PK\x03\x04 cut short')
  hf = pretrain.hartree_fock(systems.make_system(atom='He'), 'sto-3g', cache_dir=str(tmp_path))
  assert (tmp_path / 'hf_orbitals.npz.corrupt').read_bytes() == b'PK\x03\x04 cut short'
  assert hf.energy == pytest.approx(-2.807784, abs=1e-5)  # He RHF/STO-3G (PySCF)
  with np.load(cache) as data:  # written again, whole
    assert float(data['energy']) == hf.energy


def test_a_damaged_observables_file_is_set_aside(tmp_path):
  from vmc import observables
  path = tmp_path / 'observables.h5'
  path.write_bytes(b'\x89HDF\r\n\x1a\n' + bytes(64))
  store = observables.ArrayStore(str(path), ('s2',), {}, first_step=5)
  assert store.steps == [] and store.data == {'s2': []}
  assert (tmp_path / 'observables.h5.corrupt').exists() and not path.exists()


def test_only_a_full_disk_is_told_to_free_space(tmp_path):
  import errno
  from vmc import runfolder
  full = runfolder.write_failure(OSError(errno.ENOSPC, 'No space left', 'f'), str(tmp_path))
  denied = runfolder.write_failure(OSError(errno.EACCES, 'Permission denied', 'f'),
                                   str(tmp_path))
  other = runfolder.write_failure(OSError(errno.EIO, 'I/O error', 'f'), str(tmp_path))
  assert 'free space' in full
  assert 'free space' not in denied and 'make the folder writable' in denied
  assert 'free space' not in other and 'fix or remove the file named' in other


@pytest.mark.parametrize('status', ['RESOURCE_EXHAUSTED', 'INTERNAL'])
def test_out_of_device_memory_is_one_line_naming_the_batch(tmp_path, make_tiny_config,
                                                          monkeypatch, status):
  """XLA's failed allocation (here raised in place of a real one, which would take the
  machine's memory): RESOURCE_EXHAUSTED from a device, INTERNAL from the CPU client. The
  run ends with one line: the batch, the fix, what is safe."""
  import jax

  def exhausted(*args, **kwargs):
    raise jax.errors.JaxRuntimeError(f'{status}: Out of memory allocating 9 bytes.')
  monkeypatch.setattr(train, '_run_in_folder', exhausted)
  cfg = _cfg(make_tiny_config, tmp_path, 3, **{'pretrain.method': 'none'})
  with pytest.raises(RunAborted, match=rf'out of memory \({status}: Out of memory '
                     r'allocating 9 bytes\.\) with batch_size=\d+ on 1 device\(s\); lower '
                     'batch_size.*no checkpoint was written yet'):
    _run(cfg)


def test_a_batch_whose_sr_matrices_cannot_fit_is_refused_before_the_run(make_tiny_config):
  """MinSR and SPRING hold n x n matrices of all n walkers: 2,000,000 walkers need about
  44,000 GiB, which the batch size says before any work (KFAC's memory grows with the
  batch only linearly, and is not refused here)."""
  from vmc import config as config_lib
  for optimizer in ('spring', 'minsr'):
    with pytest.raises(ConfigError, match=rf'optim.optimizer={optimizer} with '
                       r'batch_size=2000000 needs 2000000 x 2000000 matrices of about '
                       r'44,703 GiB .*use batch_size <= \d+ or'):
      config_lib.resolve(make_tiny_config(optimizer=optimizer, batch_size=2_000_000))
  config_lib.resolve(make_tiny_config(optimizer='adam', batch_size=2_000_000))
