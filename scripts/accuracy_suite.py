"""Accuracy per wall-clock budget: systems x seeds with one preset, as a table of errors.

  python scripts/accuracy_suite.py --systems He,Li,LiH --budget 5 --seeds 1,2,3 \
      --out checkpoints/accuracy/small                      # runs, then the table
  python scripts/accuracy_suite.py --systems C --budget 10 --seeds 1 \
      --set optim.spring.norm_constraint=0.003 --out checkpoints/accuracy/lever_nc
  python scripts/accuracy_suite.py --report checkpoints/accuracy/small

Every run is one `vmc --config <preset> --config.budget_minutes=<budget>` command
(configs/budget.py by default: train, then evaluate, inside the budget; vmc/budget.py),
in its own process, one after the other so that each has the machine to itself; the
command is printed, so any row can be rerun alone, and rerunning the suite resumes
unfinished runs, skips runs finished at that budget or a larger one, and trains on (then
evaluates anew) runs finished at a smaller one; each row names its budget. A name of
vmc.systems.MOLECULES is a molecule, anything else an atom.
Per run: the evaluation's energy with its reblocked error bar, the error against vmc's
reference table (exact or best-estimate energies with their sources), and the wall time
of the whole command (process start to exit: SCF, pretraining, training, evaluation).
Per system: the mean error over seeds and the spread between them. Each row also keeps
the training's measured seconds per iteration and learning-rate delay (budget.json,
config.json) and the evaluation's date and git commit. Written as
<out>/accuracy.md and <out>/accuracy.json; --append_jsonl adds the rows to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vmc import systems  # noqa: E402


def system_flags(name: str) -> list[str]:
  """A molecule's name clears the preset's atom."""
  if name in systems.MOLECULES:
    return ['--config.system.atom=', f'--config.system.molecule={name}']
  return [f'--config.system.atom={name}']


def run_folder(out: str, system: str, seed: int) -> str:
  return os.path.abspath(os.path.join(out, f'{system}_seed{seed}'))


def command(system: str, seed: int, args: argparse.Namespace) -> list[str]:
  return [sys.executable, '-m', 'vmc', f'--config={args.config}', *system_flags(system),
          f'--config.budget_minutes={args.budget}', f'--config.debug.seed={seed}',
          f'--config.log.save_path={run_folder(args.out, system, seed)}',
          *(f'--config.{kv}' for kv in args.set)]


def run(system: str, seed: int, args: argparse.Namespace) -> bool:
  """One run, unless it already ended well at this budget or a larger one; its wall time
  and budget into <folder>/suite.json. Whether it ended well (vmc exited 0). A run that
  ended at a smaller budget runs again: vmc trains it on and evaluates it anew."""
  folder = run_folder(args.out, system, seed)
  done_at = _read_json(os.path.join(folder, 'suite.json')).get('budget_minutes')
  if done_at is not None and args.budget <= done_at:
    evaluated = os.path.exists(os.path.join(folder, 'evaluation', 'summary.json'))
    print(f'{folder}: ' + ('evaluated' if evaluated else 'finished without an evaluation (too '
          'little budget left; see its .log)') + f' at budget {done_at:g}, not rerun',
          file=sys.stderr)
    return True
  cmd = command(system, seed, args)
  print('vmc', shlex.join(cmd[3:]), file=sys.stderr, flush=True)
  t0 = time.time()
  with open(os.path.join(args.out, f'{system}_seed{seed}.log'), 'ab') as log:
    code = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
  wall = time.time() - t0
  if code:
    print(f'{folder}: vmc exited with {code} (see its .log)', file=sys.stderr)
    return False
  record = os.path.join(folder, 'suite.json')
  previous = _read_json(record).get('wall_seconds', 0.0)  # a resumed run adds to it
  with open(record, 'w') as f:
    json.dump({'wall_seconds': previous + wall, 'budget_minutes': args.budget,
               'command': cmd[2:]}, f, indent=2)
  return True


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def row(folder: str) -> dict | None:
  """A finished run's numbers, or None."""
  summary = _read_json(os.path.join(folder, 'evaluation', 'summary.json'))
  if summary.get('energy') is None:
    return None
  training = _read_json(os.path.join(folder, 'summary.json'))
  budget = _read_json(os.path.join(folder, 'budget.json'))
  suite = _read_json(os.path.join(folder, 'suite.json'))
  provenance = summary.get('provenance', {})
  lr = _read_json(os.path.join(folder, 'config.json')).get('optim', {}).get('lr', {})
  return dict(
      run=os.path.basename(folder), system=summary['system'],
      energy=summary['energy'], energy_error=summary['energy_error'],
      reference=summary.get('reference_energy'), reference_source=summary.get(
          'reference_source'), error_mha=summary.get('error_mha'),
      error_mha_error=summary.get('error_mha_error'),
      error_converged=summary.get('error_converged', True),
      training_error_mha=training.get('error_mha'),
      variance=summary.get('variance'),
      largest_step_shift_mha=(None if summary.get('energy_largest_step_shift') is None
                              else 1000 * summary['energy_largest_step_shift']),
      training_iterations=training.get('iterations'),
      evaluation_iterations=summary['iterations'],
      budget_minutes=suite.get('budget_minutes', budget.get('budget_minutes')),
      seconds_per_iteration=budget.get('seconds_per_iteration'),
      learning_rate_delay=lr.get('delay'),
      written_at=provenance.get('written_at'), git_commit=provenance.get('git_commit'),
      wall_minutes=suite.get('wall_seconds', float('nan')) / 60)


def report(out: str, label: str = '') -> str:
  folders = sorted(os.path.join(out, d) for d in os.listdir(out)
                   if os.path.isdir(os.path.join(out, d)))
  rows = [r for r in map(row, folders) if r is not None]
  with open(os.path.join(out, 'accuracy.json'), 'w') as f:
    json.dump(rows, f, indent=2)
  lines = [f'{label}' if label else '',
           '| system | run | budget (min) | error (mHa) | ± (mHa) | var(E_L) (Ha²) | '
           'training it | training mean (mHa) | wall (min) |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    error = ('no reference | —' if r['error_mha'] is None else
             f'{r["error_mha"]:+.2f} | {r["error_mha_error"]:.2f}'
             + ('' if r['error_converged'] else ' (lower bound)'))
    trained = ('—' if r['training_error_mha'] is None else
               f'{r["training_error_mha"]:+.2f}')
    budget = '—' if r['budget_minutes'] is None else f'{r["budget_minutes"]:g}'
    lines.append(f'| {r["system"]} | {r["run"]} | {budget} | {error} | {r["variance"]:.4f} | '
                 f'{r["training_iterations"]} | {trained} | {r["wall_minutes"]:.1f} |')
  lines += ['', '| system | seeds | mean error (mHa) | seed spread (mHa) | worst (mHa) | '
            'max wall (min) |', '|---|---|---|---|---|---|']
  for system in dict.fromkeys(r['system'] for r in rows if r['error_mha'] is not None):
    errors = np.array([r['error_mha'] for r in rows if r['system'] == system])
    walls = [r['wall_minutes'] for r in rows if r['system'] == system]
    spread = f'{errors.std(ddof=1):.2f}' if len(errors) > 1 else '—'
    lines.append(f'| {system} | {len(errors)} | {errors.mean():+.2f} | {spread} | '
                 f'{errors[np.argmax(np.abs(errors))]:+.2f} | {max(walls):.1f} |')
  text = '\n'.join(lines).lstrip('\n') + '\n'
  with open(os.path.join(out, 'accuracy.md'), 'w') as f:
    f.write(text)
  return text


def seeds(text: str) -> list[int]:
  """--seeds: comma-separated non-negative integers, at least one."""
  try:
    values = [int(s) for s in text.split(',')]
  except ValueError:
    values = []
  if not values or min(values) < 0:
    raise argparse.ArgumentTypeError(f'{text!r} is not a comma-separated list of '
                                     'non-negative integers, e.g. 1,2,3')
  return values


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--systems', default='He,Li,LiH', help='comma-separated')
  parser.add_argument('--budget', type=float, default=5.0, help='minutes per run')
  parser.add_argument('--seeds', type=seeds, default='1,2,3',
                      help='comma-separated debug.seed values')
  parser.add_argument('--config', default='configs/budget.py', help='the preset')
  parser.add_argument('--set', action='append', default=[],
                      help='key=value, a config override for every run (a lever)')
  parser.add_argument('--out', default='checkpoints/accuracy')
  parser.add_argument('--report', help='only write and print the table of this folder')
  parser.add_argument('--append_jsonl', help='also append the rows, with --set, here')
  args = parser.parse_args(argv)
  if args.report:
    if not os.path.isdir(args.report):
      print(f'accuracy_suite.py: error: --report {args.report}: not a folder of suite runs '
            '(the --out of an earlier suite)', file=sys.stderr)
      return 2
    print(report(args.report))
    return 0
  os.makedirs(args.out, exist_ok=True)
  failed = [f'{system} seed {seed}' for system in args.systems.split(',')
            for seed in args.seeds if not run(system, seed, args)]
  label = f'preset {args.config}, budget of each run in its row' + (
      f', {" ".join(args.set)}' if args.set else '')
  print(report(args.out, label))
  if args.append_jsonl:
    with open(args.append_jsonl, 'a') as f:
      for r in _read_json(os.path.join(args.out, 'accuracy.json')) or []:
        f.write(json.dumps(dict(r, preset=args.config, overrides=args.set)) + '\n')
  if failed:
    print(f'accuracy_suite.py: error: {len(failed)} run(s) failed ({", ".join(failed)}); '
          'each one\'s .log in --out says why', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
