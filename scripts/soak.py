"""Soak test: kill -9 a tiny run at random moments, rerun the same command, and check that
what it finally writes is identical to an uninterrupted run's.

  python scripts/soak.py --kills 50 --out /tmp/vmc-soak
  python scripts/soak.py --job scan --kills 12 --out /tmp/vmc-soak-scan

--job: `train` (a Li training run: SCF, pretraining, burn-in, KFAC), `eval` (an evaluation
with <S^2> of a trained Li run, made first and not killed), `scan` (scripts/scan.py, a
3-point H2 scan: training, warm starts and evaluations with forces) or `relax`
(scripts/relax.py, 3 steps of an H2 relaxation).

First an uninterrupted reference run (timed). Then series of attempts in fresh folders:
each attempt runs the same command and is killed with SIGKILL after a random delay drawn
uniformly from [0, reference wall time] (--window narrows it), so kills land in
start-up, the SCF, pretraining, burn-in, training, checkpoint writes and the summary; a
series ends when an attempt finishes, and its outputs are compared with the reference's.
Series go on until --kills kills were made; the last series is then finished without further kills.
Compared, per run folder (for a scan or relaxation, every
point's train and eval folder): every column of the statistics files but wall_time,
every array of the final checkpoint, and summary.json (but wall_time; the SCF energy to
1e-10 Ha, as PySCF does not repeat it bitwise); for a scan or relaxation also its
.extxyz byte for byte and its .json but for times, folders and provenance. Prints one
line per attempt and a verdict; exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np

RUN = ['--config.system.atom=Li', '--config.batch_size=64',
       '--config.network.determinants=2',
       '--config.network.ferminet.hidden_dims=((16, 4), (16, 4))', '--config.mcmc.steps=5',
       '--config.mcmc.burn_in=40', '--config.pretrain.iterations=40',
       '--config.optim.iterations=1000', '--config.log.save_frequency=0.01',
       '--config.log.print_every_seconds=1', '--config.debug.deterministic=True']


SCRIPTS = os.path.dirname(os.path.abspath(__file__))
H2 = ['--config.system.atom=', '--config.system.molecule=H2', '--config.batch_size=64',
      '--config.network.determinants=1', '--config.network.ferminet.hidden_dims=((8, 4),)',
      '--config.mcmc.steps=5', '--config.mcmc.burn_in=10', '--config.pretrain.iterations=10',
      '--config.optim.iterations=40', '--config.log.save_frequency=0.01',
      '--config.log.print_every_seconds=1', '--config.debug.deterministic=True']
EVAL = ['--config.optim.optimizer=none', '--config.optim.iterations=3000',
        '--config.observables.s2=True']


def _command(job: str, folder: str, trained: str) -> list[str]:
  if job == 'train':
    return [sys.executable, '-m', 'vmc'] + RUN + [f'--config.log.save_path={folder}']
  if job == 'eval':
    return [sys.executable, '-m', 'vmc'] + RUN + EVAL + [
        f'--config.log.restore_path={trained}', f'--config.log.save_path={folder}']
  if job == 'scan':
    return [sys.executable, os.path.join(SCRIPTS, 'scan.py'), '--bond_lengths=1.3,1.4,1.5',
            '--warm_iterations=20', '--eval_iterations=40', f'--out={folder}'] + H2
  return [sys.executable, os.path.join(SCRIPTS, 'relax.py'), '--bond_length=1.2',
          '--max_steps=3', '--warm_iterations=20', '--eval_iterations=40',
          f'--out={folder}'] + H2


def _phase(log_path: str) -> str:
  """The phase an attempt was in when it was killed, from its last log lines (for a scan
  or relaxation: the point's folder, train or eval, and the phase of that run)."""
  with open(log_path, errors='replace') as f:
    text = f.read()
  starts = [i for i in range(len(text)) if text.startswith('output in ', i)]
  if starts and ('point_' in text or 'step_' in text):
    line = text[starts[-1]:].splitlines()[0]
    where = '/'.join(line.rstrip().split('/')[-2:])  # e.g. point_001/eval
    phase = _run_phase(text[starts[-1]:])
    if where.endswith('eval') and phase == 'training':
      phase = 'evaluation steps'
    return f'{where} {phase}'
  return _run_phase(text)


def _run_phase(text: str) -> str:
  if 'resuming from' in text:  # a later attempt of a series
    marks = [('summary', 'energy over the last'), ('training', '] step '),
             ('training', '] burn-in: '), ('burn-in', 'burn-in follows'),
             ('resumed, compiling', 'resuming from')]
  else:
    marks = [('summary', 'energy over the last'), ('training', '] step '),
             ('training', '] burn-in: '), ('burn-in', '] pretraining: '),
             ('pretraining', '] pretrain '), ('pretraining', '] seed ')]
  for name, mark in marks:
    if mark in text:
      return name
  return 'start-up or SCF'


def _csv(path: str) -> dict[str, np.ndarray]:
  with open(path) as f:
    header = f.readline().strip().split(',')
    rows = [line.strip().split(',') for line in f if line.strip()]
  data = np.array(rows, dtype=np.float64).reshape(-1, len(header))
  return {k: data[:, i] for i, k in enumerate(header) if k != 'wall_time'}


def _run_folders(root: str) -> list[str]:
  """The run folders under a job's output folder, relative to it ('' for a single run)."""
  if os.path.exists(os.path.join(root, 'summary.json')):
    return ['']
  return sorted(os.path.join(point, run) for point in os.listdir(root)
                if os.path.isdir(os.path.join(root, point)) for run in ('train', 'eval'))


def _record(path: str, root: str) -> dict:
  """A scan's or relaxation's record without what differs between equal runs: wall times,
  the folders (which name the series) and the provenance (dates, host)."""
  with open(path) as f:
    text = f.read().replace(root, '<out>')
  record = json.loads(text)
  record.pop('provenance', None)
  for point in record['points']:
    for key in ('train_seconds', 'eval_seconds'):
      point.pop(key, None)
  return record


def _differences(reference: str, run: str) -> list[str]:
  out = []
  runs = _run_folders(reference)
  if runs != _run_folders(run):
    return [f'run folders {runs} vs {_run_folders(run)}']
  for sub in runs:
    out += [f'{sub}: {d}' if sub else d for d in _run_differences(
        os.path.join(reference, sub), os.path.join(run, sub))]
  for name in ('scan', 'relax'):
    if os.path.exists(os.path.join(reference, f'{name}.json')):
      if _record(os.path.join(reference, f'{name}.json'), reference) != _record(
          os.path.join(run, f'{name}.json'), run):
        out.append(f'{name}.json')
      with open(os.path.join(reference, f'{name}.extxyz'), 'rb') as a, open(
          os.path.join(run, f'{name}.extxyz'), 'rb') as b:
        if a.read() != b.read():
          out.append(f'{name}.extxyz')
  return out


def _run_differences(reference: str, run: str) -> list[str]:
  out = []
  for name in ('train_stats.csv', 'pretrain_stats.csv', 'eval_stats.csv'):
    if not os.path.exists(os.path.join(reference, name)):
      continue
    a, b = _csv(os.path.join(reference, name)), _csv(os.path.join(run, name))
    for k in a:
      if k not in b or a[k].shape != b[k].shape or not np.array_equal(a[k], b[k]):
        out.append(f'{name}:{k}')
  ckpts = [sorted(f for f in os.listdir(d) if f.startswith('ckpt_') and f.endswith('.npz'))[-1]
           for d in (reference, run)]
  if ckpts[0] != ckpts[1]:
    out.append(f'final checkpoint {ckpts[0]} vs {ckpts[1]}')
  else:
    with np.load(os.path.join(reference, ckpts[0])) as x, np.load(os.path.join(run, ckpts[1])) as y:
      out += [f'{ckpts[0]}:{k}' for k in x.files
              if k != 'header' and not np.array_equal(x[k], y[k])]
  summaries = []
  for d in (reference, run):
    with open(os.path.join(d, 'summary.json')) as f:
      summaries.append({k: v for k, v in json.load(f).items() if k != 'wall_time'})
  # PySCF's SCF energy is not bitwise reproducible between processes (threaded BLAS); the
  # orbitals reach the network in float32, so the statistics above are still identical.
  hf = [s.pop('hf_energy', None) or 0.0 for s in summaries]
  for s in summaries:  # provenance: the time written, and paths naming the series' folder
    s['seed'] = (s.pop('provenance', None) or {}).get('seed')
    s.pop('save_path', None)
    s.pop('restore_path', None)
  if summaries[0] != summaries[1] or abs(hf[0] - hf[1]) > 1e-10:
    out.append('summary.json')
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--job', choices=('train', 'eval', 'scan', 'relax'), default='train')
  parser.add_argument('--kills', type=int, default=50)
  parser.add_argument('--out', default='/tmp/vmc-soak')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--window', default='0,1', help='kill delays are drawn uniformly from '
                      'this range of fractions of the reference wall time (e.g. 0.85,1 to '
                      'aim at the last point of a scan)')
  args = parser.parse_args()
  rng = random.Random(args.seed)
  low, high = (float(v) for v in args.window.split(','))
  shutil.rmtree(args.out, ignore_errors=True)
  os.makedirs(args.out)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  trained = os.path.join(args.out, 'trained')
  if args.job == 'eval':  # the run evaluated, made once and not killed
    with open(os.path.join(args.out, 'trained.log'), 'w') as log:
      subprocess.run(_command('train', trained, ''), env=env, stderr=log, check=True)
  command = lambda folder: _command(args.job, folder, trained)
  reference = os.path.join(args.out, 'reference')
  t0 = time.time()
  with open(os.path.join(args.out, 'reference.log'), 'w') as log:
    subprocess.run(command(reference), env=env, stderr=log, check=True)
  duration = time.time() - t0
  print(f'reference run: {duration:.1f} s', flush=True)
  kills, series, attempts, failures = 0, 0, 0, 0
  phases: dict[str, int] = {}
  while kills < args.kills:
    series += 1
    folder = os.path.join(args.out, f'series_{series:03d}')
    while True:
      attempts += 1
      log_path = os.path.join(args.out, f'attempt_{attempts:04d}.log')
      delay = rng.uniform(low * duration, high * duration) if kills < args.kills else None
      with open(log_path, 'w') as log:
        proc = subprocess.Popen(command(folder), env=env, stderr=log)
        try:
          code = proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait()
          code = None
      if code is None:
        kills += 1
        phase = _phase(log_path)
        phases[phase] = phases.get(phase, 0) + 1
        print(f'series {series} attempt {attempts}: killed after {delay:.1f} s in {phase} '
              f'(kill {kills})', flush=True)
        continue
      if code != 0:
        print(f'series {series} attempt {attempts}: exit {code}; see {log_path}', flush=True)
        return 1
      differences = _differences(reference, folder)
      failures += bool(differences)
      print(f'series {series} finished after {attempts} attempts: '
            f'{"identical to the reference" if not differences else differences}',
            flush=True)
      break
  print(f'{kills} kills in {series} series ({attempts} attempts); kills by phase: '
        f'{json.dumps(phases)}; series that differ from the reference: {failures}')
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())
