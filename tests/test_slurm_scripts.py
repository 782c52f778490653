"""scripts/slurm: the batch scripts run as SLURM would run them, with stand-ins for srun,
scancel and scontrol that record their calls (no SLURM on the test machine)."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from conftest import trainer
from vmc import checkpoint, cli, systems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM = os.path.join(ROOT, 'scripts', 'slurm')
SCRIPTS = ['one_gpu.sbatch', 'one_node.sbatch', 'multi_node.sbatch']
TINY = ['--config.batch_size=32', '--config.mcmc.burn_in=2', '--config.pretrain.method=none',
        '--config.network.determinants=1', '--config.network.ferminet.hidden_dims=((8, 4),)',
        '--config.system.atom=He', '--config.debug.deterministic=True',
        '--config.log.print_every_seconds=0', f'--config.optim.optimizer={trainer()}']


def _fake_slurm(tmp_path, srun_body):
  """A bin folder with srun, scancel and scontrol stand-ins; calls go to calls.log."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  log, pid = tmp_path / 'calls.log', tmp_path / 'srun.pid'
  scripts = {
      'srun': f'echo $$ > {pid}\n{srun_body}\n',
      'scancel': f'echo "scancel $*" >> {log}\nkill -TERM "$(cat {pid})"\n',
      'scontrol': f'echo "scontrol $*" >> {log}\n',
  }
  for name, body in scripts.items():
    path = bin_dir / name
    path.write_text('#!/bin/bash\n' + body)
    path.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'OMPI_'))}
  env.update(PATH=f'{bin_dir}:{os.path.dirname(sys.executable)}:{env["PATH"]}',
             VENV=sys.prefix, SLURM_JOB_ID='4242', SLURM_JOB_NAME='vmc-test',
             SLURM_SUBMIT_DIR=ROOT, JAX_PLATFORMS='cpu', RUN_DIR=str(tmp_path / 'run'))
  return env, log


@pytest.mark.parametrize('script', SCRIPTS)
def test_batch_script_runs_a_valid_vmc_command(tmp_path, script):
  record = tmp_path / 'args'
  env, _ = _fake_slurm(tmp_path, f'printf "%s\\n" "$@" > {record}')
  proc = subprocess.run(['bash', os.path.join(SLURM, script), '--config.optim.iterations=7'],
                        env=env, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  args = record.read_text().splitlines()
  assert args[0] == 'vmc' and args[1] == '--config'
  assert os.path.exists(os.path.join(ROOT, args[2]))
  assert cli._unknown_key_message(args[3:]) is None
  assert f'--config.log.save_path={tmp_path / "run"}' in args
  assert args[-1] == '--config.optim.iterations=7'  # sbatch's extra arguments go to vmc
  for arg in args:
    if arg.startswith('--config.system.molecule='):
      assert arg.split('=')[1] in systems.MOLECULES


@pytest.mark.slow
def test_time_limit_signal_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path):
  env, log = _fake_slurm(tmp_path, 'exec "$@"')
  script = os.path.join(SLURM, 'one_gpu.sbatch')
  proc = subprocess.Popen(['bash', script] + TINY + ['--config.optim.iterations=100000'],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  stats = tmp_path / 'run' / 'train_stats.csv'
  deadline = time.time() + 300
  while time.time() < deadline and (not stats.exists() or len(stats.read_text().splitlines()) < 4):
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.5)
  proc.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=B:USR1@600` sends
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert 'stopped by SIGTERM' in err
  assert log.read_text().splitlines() == ['scancel --signal=TERM 4242', 'scontrol requeue 4242']
  step, path = checkpoint.list_checkpoints(str(tmp_path / 'run'))[-1]

  # SLURM starts the requeued job: the same script, which resumes and finishes.
  log.unlink()
  done = subprocess.run(['bash', script] + TINY + [f'--config.optim.iterations={step + 2}'],
                        env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'resuming from {path} at step {step}' in done.stderr
  assert not log.exists()  # finished: nothing cancelled or requeued
  assert checkpoint.list_checkpoints(str(tmp_path / 'run'))[-1][0] == step + 2


def test_scripts_are_valid_bash():
  for name in SCRIPTS + ['requeue.sh']:
    proc = subprocess.run(['bash', '-n', os.path.join(SLURM, name)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, (name, proc.stderr)
    assert shlex.split(open(os.path.join(SLURM, name)).readline()) == ['#!/bin/bash']
