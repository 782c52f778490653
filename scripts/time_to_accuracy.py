"""Wall seconds to a given accuracy: the same training run with several checkouts of vmc.

  python scripts/time_to_accuracy.py --compare 43d9e35,. --system Li --iterations 2500 \
      --out checkpoints/time_to_accuracy          # runs one after the other, then the table
  python scripts/time_to_accuracy.py --report checkpoints/time_to_accuracy

Each checkout (as in scripts/benchmark.py --compare: git revisions, directories, '.' for
this working tree) runs `python -m vmc --config configs/atom.py` from its own tree with
the same flags: the production network, batch 256, pretrain.iterations (1000), once per
seed of --seeds (three by default: one trajectory's crossing time is one sample of a
random variable, docs/benchmarks.md). The runs go one after the other, never side by
side, so each has the machine to itself. Reported per run: pretraining's wall seconds
(from pretrain_stats.csv), and the wall seconds from the first training step (its
compilation included) to the first iteration at which the moving mean of the last
--window energies is within 10, 5, 2 and 1 mHa of the exact energy (vmc's reference
table), with that iteration, '—' if never; per checkout, the median over its seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'scripts'))

THRESHOLDS_MHA = (10.0, 5.0, 2.0, 1.0)


def run(label: str, tree: str, seed: int, args: argparse.Namespace) -> None:
  save = os.path.abspath(os.path.join(args.out, f'{label}_seed{seed}'))
  if os.path.exists(os.path.join(save, 'train_stats.csv')):
    print(f'{save}: exists, not rerun', file=sys.stderr)
    return
  flags = [f'--config={os.path.join(tree, "configs", "atom.py")}',
           f'--config.system.atom={args.system}', f'--config.batch_size={args.batch_size}',
           f'--config.pretrain.iterations={args.pretrain}',
           f'--config.optim.iterations={args.iterations}', f'--config.debug.seed={seed}',
           f'--config.log.save_path={save}']
  os.makedirs(save, exist_ok=True)
  with open(os.path.join(save, 'run.log'), 'w') as log:
    subprocess.run([sys.executable, '-m', 'vmc'] + flags, cwd=tree, stdout=log, stderr=log,
                   check=True)
  with open(os.path.join(save, 'checkout.json'), 'w') as f:
    json.dump({'checkout': label, 'seed': seed, 'tree': tree, 'flags': flags}, f)


def summarize(save: str, window: int) -> dict:
  from vmc import analysis, reference
  stats = analysis.read_stats(save, 'train_stats.csv')
  pre = analysis.read_stats(save, 'pretrain_stats.csv')
  exact = reference.lookup(analysis.system_of(save))
  energies, wall = np.asarray(stats['energy']), np.asarray(stats['wall_time'])
  out = {'run': os.path.basename(save), 'iterations': len(energies),
         'pretrain_s': float(pre['wall_time'][-1]),
         's_per_iter': analysis.seconds_per_iteration(stats), 'exact': exact.energy}
  for mha in THRESHOLDS_MHA:
    t = analysis.iterations_to_reach(energies, exact.energy, mha / 1000.0, window)
    out[f'{mha:g}'] = None if t is None else (t, float(wall[t - 1]))
  return out


def report(out_dir: str, window: int) -> str:
  rows = [summarize(os.path.join(out_dir, d), window) for d in sorted(os.listdir(out_dir))
          if os.path.exists(os.path.join(out_dir, d, 'train_stats.csv'))]
  head = ['run', 'pretraining s', 's/iter'] + [f'within {m:g} mHa: s (iteration)'
                                                for m in THRESHOLDS_MHA]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    cells = [r['run'], f'{r["pretrain_s"]:.0f}', f'{r["s_per_iter"]:.3f}']
    cells += [f'{r[f"{m:g}"][1]:.0f} ({r[f"{m:g}"][0]})' if r[f'{m:g}'] else
              f'— (> {r["iterations"]})' for m in THRESHOLDS_MHA]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', '| checkout | seeds | ' + ' | '.join(
      f'within {m:g} mHa: median s (reached/seeds)' for m in THRESHOLDS_MHA) + ' |',
      '|' + '---|' * (2 + len(THRESHOLDS_MHA))]
  for checkout in dict.fromkeys(r['run'].rsplit('_seed', 1)[0] for r in rows):
    group = [r for r in rows if r['run'].rsplit('_seed', 1)[0] == checkout]
    cells = [checkout, str(len(group))]
    for m in THRESHOLDS_MHA:
      reached = [r[f'{m:g}'][1] for r in group if r[f'{m:g}']]
      # Runs that never reach count as slower than any that do: the median of all seeds.
      times = sorted(reached) + [float('inf')] * (len(group) - len(reached))
      median = times[(len(times) - 1) // 2]
      cells.append(f'{median:.0f} ({len(reached)}/{len(group)})' if np.isfinite(median)
                   else f'— ({len(reached)}/{len(group)})')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines + ['', f'Moving mean over {window} iterations; exact energy '
                            f'{rows[0]["exact"]:.6f} Ha (vmc/data/energies.csv). The '
                            'median over seeds is the lower median; a seed that never '
                            'reaches a threshold counts as the slowest.' if rows else ''])


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--compare', default='.', help="checkouts, as in benchmark.py")
  parser.add_argument('--system', default='Li')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--pretrain', type=int, default=1000)
  parser.add_argument('--iterations', type=int, default=2500)
  parser.add_argument('--seeds', default='7,8,9', help='comma-separated debug.seed values')
  parser.add_argument('--window', type=int, default=200)
  parser.add_argument('--out', default='checkpoints/time_to_accuracy')
  parser.add_argument('--report', help='only print the table of this folder')
  args = parser.parse_args(argv)
  if args.report:
    print(report(args.report, args.window))
    return 0
  import benchmark
  for name in args.compare.split(','):
    label, script = benchmark.resolve_checkout(name)
    for seed in (int(s) for s in args.seeds.split(',')):
      run(label, os.path.dirname(os.path.dirname(script)), seed, args)
  print(report(args.out, args.window))
  return 0


if __name__ == '__main__':
  sys.exit(main())
