"""Data parallelism: several devices in one process, and several processes (jax.distributed).

Virtual CPU devices need XLA_FLAGS before JAX starts, and processes need their own
interpreter, so those runs go through tests/parallel_worker.py in subprocesses.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.monitoring
import numpy as np
import pytest

from conftest import xla_flags
from vmc import checkpoint, config as config_lib, parallel, train
from vmc.errors import ConfigError

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'parallel_worker.py')
_SLURM_AND_MPI = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_STEP_NUM_TASKS',
                  'SLURM_PROCID', 'SLURM_LOCALID', 'OMPI_COMM_WORLD_SIZE')


def _env(devices=1, **extra):
  env = {k: v for k, v in os.environ.items() if k not in _SLURM_AND_MPI}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags(devices))
  env.update(extra)
  return env


def _worker(out, overrides, cwd, env):
  args = [sys.executable, WORKER, str(out)] + [f'{k}={v}' for k, v in overrides.items()]
  return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=400):
  _, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return err


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _params(result):
  return [result[k] for k in sorted(result.files) if k.startswith('param_')]


def _block_mean(x, block=20):
  """Mean and its standard error from means of consecutive blocks (autocorrelation)."""
  x = np.asarray(x)[:len(x) // block * block].reshape(-1, block).mean(axis=1)
  return x.mean(), x.std(ddof=1) / np.sqrt(len(x))


# ----------------------------------------------------------------------------------------
# Start-up decisions (no JAX processes needed).


@pytest.mark.parametrize('env, expected', [
    ({}, None),
    (dict(SLURM_JOB_ID='7', SLURM_STEP_NODELIST='n1', SLURM_NTASKS='4', SLURM_PROCID='0',
          SLURM_LOCALID='0'), (4, 'SLURM')),
    # A job step (srun) of one task inside a 4-task allocation is a single process.
    (dict(SLURM_JOB_ID='7', SLURM_STEP_NODELIST='n1', SLURM_NTASKS='4',
          SLURM_STEP_NUM_TASKS='1', SLURM_PROCID='0', SLURM_LOCALID='0'), None),
    (dict(SLURM_JOB_ID='7', SLURM_NTASKS='4'), None),  # the batch script, not srun
    (dict(OMPI_COMM_WORLD_SIZE='2'), (2, 'Open MPI')),
    (dict(OMPI_COMM_WORLD_SIZE='1'), None),
])
def test_launcher_detection(monkeypatch, env, expected):
  for key in _SLURM_AND_MPI:
    monkeypatch.delenv(key, raising=False)
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  assert parallel._launched_processes() == expected


def test_single_process_needs_no_distributed_setup(make_tiny_config):
  cfg = make_tiny_config()
  parallel.initialize(cfg.distributed)  # auto, no launcher, no address: nothing to start
  assert parallel.process_count() == 1 and parallel.is_main()
  assert parallel.share({'a': 1}) == {'a': 1}
  np.testing.assert_array_equal(parallel.any_process([True, False]), [True, False])
  with pytest.raises(ConfigError, match="distributed.mode='sometimes'"):
    config_lib.resolve(make_tiny_config(**{'distributed.mode': 'sometimes'}))


def test_a_backend_that_cannot_start_is_one_line(make_tiny_config, monkeypatch):
  """JAX_PLATFORMS=cuda where the CUDA plugin is missing: JAX 0.9 raises a bare
  AssertionError from jax.devices(); `vmc` says what happened and the way out."""
  def no_backend():
    raise AssertionError
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  monkeypatch.setattr(jax, 'devices', no_backend)
  with pytest.raises(ConfigError) as error:
    parallel.initialize(make_tiny_config().distributed)
  assert str(error.value) == (
      'JAX could not start its backend for JAX_PLATFORMS=cuda (AssertionError); install jax '
      "with that platform's plugin (docs/install.md), or unset JAX_PLATFORMS to run on the "
      'CPU')


# ----------------------------------------------------------------------------------------
# Several devices in one process.


@pytest.mark.slow
def test_two_devices_train_with_identical_parameters_and_checkpoint_all_walkers(tmp_path):
  proc = _worker(tmp_path / 'two.npz',
                 {'batch_size': 64, 'optim.iterations': 8, 'pretrain.method': '"hf"',
                  'pretrain.iterations': 5, 'log.save_path': '"run"'}, tmp_path, _env(2))
  err = _finish(proc)
  assert '1 process, 2 cpu devices (2 per process), 32 walkers per device' in err
  result = np.load(tmp_path / 'two.npz')
  assert int(result['devices']) == 2 and int(result['step']) == 8
  assert float(result['device_spread']) == 0.0  # bitwise the same on both devices
  step, path = checkpoint.list_checkpoints(str(tmp_path / 'run'))[-1]
  with np.load(path) as data:
    walker_arrays = [data[k] for k in data.files if k.startswith('walkers/')]
    keys = [data[k] for k in data.files if k.startswith('key/')]
  assert walker_arrays[0].shape == (64, 6)  # both devices' walkers, He: 2 electrons
  assert keys[0].shape[0] == 2  # one RNG stream per device


@pytest.mark.slow
def test_excited_states_train_on_two_devices(tmp_path):
  """K = 2 states on two devices from HF excitations: the same parameters on both, the
  states' columns written, walkers of 2 copies checkpointed."""
  proc = _worker(tmp_path / 'two.npz',
                 {'batch_size': 32, 'optim.iterations': 4, 'system.states': 2,
                  'pretrain.method': '"hf"', 'pretrain.basis': '"aug-ccpvdz"',
                  'pretrain.iterations': 5, 'log.save_path': '"run"'}, tmp_path, _env(2))
  _finish(proc)
  result = np.load(tmp_path / 'two.npz')
  assert int(result['devices']) == 2 and float(result['device_spread']) == 0.0
  assert np.all(np.isfinite(result['energies']))
  with np.load(checkpoint.list_checkpoints(str(tmp_path / 'run'))[-1][1]) as data:
    assert [data[k] for k in data.files if k.startswith('walkers/')][0].shape == (32, 12)


@pytest.mark.slow
def test_two_devices_sample_the_same_energy_as_one(tmp_path, make_tiny_config):
  """A fixed wavefunction (trained, then learning rate 0) sampled on 1 and on 2 devices."""
  cfg = make_tiny_config('He', batch_size=128, **{'mcmc.steps': 10})
  cfg.pretrain.method, cfg.pretrain.iterations = 'hf', 50  # a low-variance wavefunction
  cfg.optim.iterations = 40
  cfg.log.save_path = str(tmp_path / 'trained')
  train.run(config_lib.resolve(cfg))
  two = _worker(tmp_path / 'two.npz',
                {'batch_size': 128, 'mcmc.steps': 10, 'optim.iterations': 240,
                 'optim.lr.rate': 0.0,
                 'log.restore_path': f'"{tmp_path / "trained"}"', 'log.save_path': '"two"'},
                tmp_path, _env(2))
  cfg.optim.iterations, cfg.optim.lr.rate = 240, 0.0
  cfg.log.restore_path, cfg.log.save_path = str(tmp_path / 'trained'), str(tmp_path / 'one')
  one = train.run(config_lib.resolve(cfg))
  _finish(two)
  two = np.load(tmp_path / 'two.npz')
  assert float(two['device_spread']) == 0.0
  # Learning rate 0: both sampled the trained wavefunction, restored onto every device.
  for a, b in zip(_params(two), jax.tree_util.tree_leaves(parallel.first(one.final_state.params)),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  assert len(two['energies']) == len(one.energies) == 200
  e1, s1 = _block_mean(one.energies)
  e2, s2 = _block_mean(two['energies'])
  assert abs(e1 - e2) < 4 * np.hypot(s1, s2), (e1, s1, e2, s2)
  assert s1 < 0.01 and s2 < 0.01, (s1, s2)  # the comparison has teeth: mHa-sized errors


# ----------------------------------------------------------------------------------------
# Several processes (jax.distributed on localhost, CPU collectives over gloo). Each
# process runs in its own folder with the same relative log.save_path, as on hosts
# without a shared file system: only process 0's folder may receive outputs.


def _launch(tmp_path, overrides, devices_per_process=1, slurm=False):
  port = _free_port()
  job = str(port)  # SLURM's coordinator port is derived from the job id
  procs = []
  for i in range(2):
    cwd = tmp_path / f'host{i}'
    cwd.mkdir(exist_ok=True)
    if slurm:
      env = _env(devices_per_process, SLURM_JOB_ID=job, SLURM_STEP_NODELIST='localhost',
                 SLURM_NTASKS='2', SLURM_STEP_NUM_TASKS='2', SLURM_PROCID=str(i),
                 SLURM_LOCALID=str(i), JAX_COORDINATOR_PORT=str(port))
      extra = {}
    else:
      env = _env(devices_per_process)
      extra = {'distributed.coordinator_address': f'"127.0.0.1:{port}"',
               'distributed.num_processes': 2, 'distributed.process_id': i}
    procs.append(_worker(tmp_path / f'result{i}.npz', dict(overrides, **extra), cwd, env))
  return procs


def _outputs(folder):
  return sorted(p.name for p in folder.iterdir() if p.name != '__pycache__')


@pytest.mark.slow
def test_two_processes_train_as_one_stop_together_and_only_process_zero_writes(tmp_path):
  run = {'batch_size': 64, 'pretrain.method': '"hf"', 'pretrain.iterations': 5,
         'log.save_path': '"run"', 'log.print_every_seconds': 0.0}
  # 2 processes x 2 devices. SIGTERM reaches process 1 only; both must stop after the
  # same step, with one checkpoint of all 64 walkers written by process 0.
  procs = _launch(tmp_path, dict(run, **{'optim.iterations': 100000}), devices_per_process=2)
  stats = tmp_path / 'host0' / 'run' / 'train_stats.csv'
  deadline = time.time() + 300
  while time.time() < deadline and (not stats.exists() or len(stats.read_text().splitlines()) < 4):
    assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)
  errs = [_finish(p) for p in procs]
  assert 'parallelism: 2 processes, 4 cpu devices (2 per process), 16 walkers per device' in errs[0]
  assert 'stopped by a signal to another process' in errs[0]
  assert 'stopped by SIGTERM' in errs[1]
  results = [np.load(tmp_path / f'result{i}.npz') for i in range(2)]
  step = int(results[0]['step'])
  assert int(results[1]['step']) == step
  assert _outputs(tmp_path / 'host1') == []
  saved, path = checkpoint.list_checkpoints(str(tmp_path / 'host0' / 'run'))[-1]
  assert saved == step
  with np.load(path) as data:
    assert data['walkers/00000'].shape == (64, 6)  # the walkers of both processes
    assert data['key/00000'].shape[0] == 4  # one RNG stream per device

  # The same command with a few more iterations: process 0 reads the checkpoint, both go on.
  procs = _launch(tmp_path, dict(run, **{'optim.iterations': step + 3}), devices_per_process=2)
  errs = [_finish(p) for p in procs]
  assert f'resuming from run/ckpt_{step:06d}.npz at step {step}' in errs[0]
  results = [np.load(tmp_path / f'result{i}.npz') for i in range(2)]
  assert [int(r['step']) for r in results] == [step + 3] * 2
  assert [float(r['device_spread']) for r in results] == [0.0, 0.0]
  for a, b in zip(_params(results[0]), _params(results[1]), strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(results[0]['energies'], results[1]['energies'])
  rows = stats.read_text().splitlines()[1:]
  assert [int(r.split(',')[0]) for r in rows] == list(range(step + 3))
  assert _outputs(tmp_path / 'host1') == []
  assert _outputs(tmp_path / 'host0' / 'run') == sorted({
      '.vmc.lock', 'config.json', 'ckpt_000000.npz', f'ckpt_{step:06d}.npz',
      f'ckpt_{step + 3:06d}.npz', 'hf_orbitals.npz', 'pretrain_stats.csv', 'summary.json',
      'train_stats.csv'})


@pytest.mark.slow
def test_processes_started_by_slurm_find_each_other_from_its_environment(tmp_path):
  procs = _launch(tmp_path, {'batch_size': 32, 'optim.iterations': 3, 'log.save_path': '"run"'},
                  slurm=True)
  errs = [_finish(p) for p in procs]
  assert 'starting jax.distributed (SLURM)' in errs[0]
  results = [np.load(tmp_path / f'result{i}.npz') for i in range(2)]
  assert [int(r['processes']) for r in results] == [2, 2]
  assert [int(r['process']) for r in results] == [0, 1]
  for a, b in zip(_params(results[0]), _params(results[1]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _outputs(tmp_path / 'host1') == []
  assert 'train_stats.csv' in _outputs(tmp_path / 'host0' / 'run')


@pytest.mark.parametrize('flags, message', [
    (['--config.distributed.process_id=0'], 'Number of processes must be defined'),
    (['--config.distributed.num_processes=2', '--config.distributed.process_id=2'],
     'process_id < num_processes'),
])
def test_incomplete_multi_process_settings_are_one_line_errors(tmp_path, flags, message):
  proc = subprocess.run(
      [sys.executable, '-m', 'vmc', '--config.distributed.coordinator_address=127.0.0.1:1',
       f'--config.log.save_path={tmp_path / "run"}'] + flags,
      env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  line, = [l for l in proc.stderr.splitlines() if l.startswith('vmc: error:')]
  assert 'cannot start a multi-process run' in line and message in line
  assert not (tmp_path / 'run').exists()


def test_a_pmapped_function_compiles_once_for_host_arrays_and_its_own_outputs():
  """On jax >= 0.10 pmap runs on shard_map, which took a new state (host arrays) and its own
  outputs as different inputs: the iteration compiled twice. vmc.parallel.pmap places host
  arguments as pmap places its outputs first; broadcast and static arguments pass as they are."""
  compiles = []
  listen = lambda event, _, **kw: compiles.append(event) if event.endswith(
      'backend_compile_duration') else None
  step = parallel.pmap(lambda x, w, n: (x * w + n, w), in_axes=(0, None, None),
                       static_broadcasted_argnums=2, donate_argnums=0)
  x = parallel.shard(np.arange(4.0, dtype=np.float32))
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    x, w = step(x, np.float32(2.0), 1)
    first = len(compiles)
    for _ in range(3):
      x, w = step(x, np.float32(2.0), 1)
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert first >= 1 and len(compiles) == first
  np.testing.assert_array_equal(parallel.unshard(x), np.arange(4.0) * 16 + 15)
  placed = parallel.on_devices(parallel.replicate(np.ones(3, np.float32)))
  assert parallel.on_devices(placed) is placed  # already placed: unchanged, no copy
