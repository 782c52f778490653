"""KFAC, MinSR and SPRING side by side: the same network, batch, pretraining and seed, the
same wall-clock budget of training each.

  python scripts/compare_optimizers.py --systems Li,C --optimizers kfac,minsr,spring \
      --minutes 8 --out checkpoints/compare_optimizers
  python scripts/compare_optimizers.py --report checkpoints/compare_optimizers

Every run is a `vmc` command in its own process, one after the other (the machine's cores
are all theirs), stopped by SIGTERM once its training has used the budget; a run folder
that already holds that much training is reused. The report, per system and optimizer:
iterations and training seconds until the 100-iteration moving mean of the energy is
first within 10, 5, 2 and 1 mHa of the exact energy (vmc/data/energies.csv); the noise of
such a mean (sigma_100: the reblocked error of the last 20% of the iterations, scaled to
100 iterations), since a threshold not well above it can be crossed by a fluctuation; and
the energy of the last 20% of the iterations within the budget, reblocked, as an error
against the exact energy, with the mean variance of the local energy there.
The `vmc` command of each run is printed, so any row can be rerun alone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

THRESHOLDS_MHA = (10.0, 5.0, 2.0, 1.0)
WINDOW = 100  # iterations of the moving mean compared with the thresholds


def flags(system: str, optimizer: str, args: argparse.Namespace, save_path: str) -> list[str]:
  """The vmc command-line flags of one run (all runs share everything but the optimizer)."""
  return [
      f'--config.system.atom={system}', f'--config.optim.optimizer={optimizer}',
      f'--config.batch_size={args.batch_size}', '--config.network.determinants=8',
      '--config.network.ferminet.hidden_dims=((64, 16), (64, 16), (64, 16))',
      '--config.optim.iterations=1000000', f'--config.pretrain.iterations={args.pretrain}',
      f'--config.debug.seed={args.seed}', f'--config.log.save_path={save_path}',
      '--config.log.print_every_seconds=30',
  ]


def _trained_seconds(stats_path: str) -> float:
  try:
    with open(stats_path) as f:
      last = f.read().rstrip('\n').rsplit('\n', 1)[-1].split(',')
    return float(last[-1])
  except (OSError, ValueError, IndexError):
    return 0.0


def run(system: str, optimizer: str, args: argparse.Namespace) -> str:
  save_path = os.path.join(args.out, f'{system}_{optimizer}')
  stats = os.path.join(save_path, 'train_stats.csv')
  budget = 60.0 * args.minutes
  if _trained_seconds(stats) >= budget:
    print(f'reusing {save_path}', flush=True)
    return save_path
  command = [sys.executable, '-m', 'vmc'] + flags(system, optimizer, args, save_path)
  print(' '.join(command[1:]), flush=True)
  with open(os.path.join(args.out, f'{system}_{optimizer}.log'), 'a') as log:
    proc = subprocess.Popen(command, stdout=log, stderr=log)
    while proc.poll() is None and _trained_seconds(stats) < budget:
      time.sleep(2.0)
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
    if proc.wait() not in (0, 128 + signal.SIGTERM):
      raise SystemExit(f'{system} {optimizer}: vmc exited with {proc.returncode}; see '
                       f'{args.out}/{system}_{optimizer}.log')
  return save_path


def summarize(save_path: str, budget_s: float) -> dict:
  """Thresholds and the final reblocked energy of one run, within the budget."""
  from vmc import analysis, reference, statistics  # noqa: PLC0415
  stats = analysis.read_stats(save_path)
  keep = stats['wall_time'] <= budget_s
  energy, wall = stats['energy'][keep], stats['wall_time'][keep]
  exact = reference.lookup(analysis.system_of(save_path))
  assert exact is not None, save_path
  out = {'iterations': int(len(energy)), 'seconds': float(wall[-1]),
         's_per_iteration': analysis.seconds_per_iteration({'wall_time': wall}),
         'exact': exact.energy, 'exact_source': exact.source}
  for mha in THRESHOLDS_MHA:
    t = analysis.iterations_to_reach(energy, exact.energy, mha / 1000.0, WINDOW)
    out[f'to_{mha:g}mHa'] = None if t is None else [t, round(float(wall[t - 1]), 1)]
  tail = energy[len(energy) - max(4, len(energy) // 5):]
  e = statistics.estimate(tail)
  out.update(final_error_mha=1000.0 * (e.mean - exact.energy), final_error_bar_mha=1000.0 * e.error,
             final_window=int(len(tail)),
             sigma_100_mha=1000.0 * e.error * (len(tail) / WINDOW) ** 0.5,
             final_variance=float(np.mean(stats['variance'][keep][len(energy) - len(tail):])))
  return out


def report(out_dir: str, budget_s: float) -> str:
  rows = []
  for name in sorted(os.listdir(out_dir)):
    path = os.path.join(out_dir, name)
    if os.path.isfile(os.path.join(path, 'train_stats.csv')):
      system, optimizer = name.rsplit('_', 1)
      rows.append((system, optimizer, summarize(path, budget_s)))
  head = ('| system | optimizer | s/it | iterations in budget | '
          + ' | '.join(f'to {m:g} mHa (it, s)' for m in THRESHOLDS_MHA)
          + ' | σ_100 (mHa) | final error (mHa) | final var(E_L) (Ha²) |')
  lines = [head, '|' + '---|' * (7 + len(THRESHOLDS_MHA))]
  for system, optimizer, s in rows:
    reached = [('—' if s[f'to_{m:g}mHa'] is None else
                f'{s[f"to_{m:g}mHa"][0]}, {s[f"to_{m:g}mHa"][1]:.0f}') for m in THRESHOLDS_MHA]
    lines.append(f'| {system} | {optimizer} | {s["s_per_iteration"]:.3f} | {s["iterations"]} | '
                 + ' | '.join(reached) + f' | {s["sigma_100_mha"]:.1f}'
                 + f' | {s["final_error_mha"]:+.2f} ± {s["final_error_bar_mha"]:.2f}'
                 + f' | {s["final_variance"]:.4f} |')
  lines.append('')
  lines.extend(json.dumps(dict(system=a, optimizer=b, **s)) for a, b, s in rows)
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--systems', default='Li,C')
  parser.add_argument('--optimizers', default='kfac,minsr,spring')
  parser.add_argument('--minutes', type=float, default=8.0, help='training budget per run')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--pretrain', type=int, default=200, help='pretrain.iterations')
  parser.add_argument('--seed', type=int, default=23)
  parser.add_argument('--out', default='checkpoints/compare_optimizers')
  parser.add_argument('--report', help='only print the report of this folder')
  args = parser.parse_args(argv)
  if args.report:
    print(report(args.report, 60.0 * args.minutes))
    return 0
  os.makedirs(args.out, exist_ok=True)
  for system in args.systems.split(','):
    for optimizer in args.optimizers.split(','):
      run(system, optimizer, args)
  print(report(args.out, 60.0 * args.minutes))
  return 0


if __name__ == '__main__':
  sys.exit(main())
