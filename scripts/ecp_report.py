"""The tables of docs/pseudopotentials.md from the runs of scripts/ecp_runs.sh.

  python scripts/ecp_report.py [--dir checkpoints/ecp]

Accuracy: Na and Mg with ccECP, the last 2000 training iterations and the evaluation,
against vmc/data/energies_ecp.csv. S with and without ccECP: energy, variance and wall
time over the first 1000 iterations of the same network and batch. Speed: seconds per
iteration from scripts/benchmark.py --pp off,ccecp (interleaved, one sitting).
"""

from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np


def _summary(path: str) -> dict:
  with open(os.path.join(path, 'summary.json')) as f:
    return json.load(f)


def _stats(path: str) -> dict[str, np.ndarray]:
  name = 'eval_stats.csv' if os.path.exists(os.path.join(path, 'eval_stats.csv')) else (
      'train_stats.csv')
  with open(os.path.join(path, name)) as f:
    rows = list(csv.DictReader(f))
  return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def accuracy(root: str) -> list[str]:
  from vmc import analysis
  lines = ['| atom | Hamiltonian | reference (Ha) | training, last 2000 (Ha) | evaluation (Ha) '
           '| evaluation − reference (mHa) | median E_L of the evaluation iterations (Ha) |',
           '|---|---|---|---|---|---|---|']
  for name in ('na', 'mg'):
    train_dir, eval_dir = os.path.join(root, name), os.path.join(root, name + '_eval')
    if not os.path.exists(os.path.join(eval_dir, 'summary.json')):
      continue
    train = analysis.summarize_stats(_stats(train_dir), window=2000 / 10000)
    ev = _summary(eval_dir)
    e = _stats(eval_dir)['energy']
    diff = 1e3 * (ev['energy'] - ev['reference_energy'])
    lines.append(
        f'| {ev["system"]} | {ev["hamiltonian"]} | {ev["reference_energy"]:.6f} '
        f'({ev["reference_kind"]}) | {train["energy"]:.6f} ± {train["energy_error"]:.6f} | '
        f'{ev["energy"]:.6f} ± {ev["energy_error"]:.6f} | {diff:+.2f} ± '
        f'{1e3 * ev["energy_error"]:.2f} | {np.median(e):.6f} |')
  return lines


def first_iterations(root: str) -> list[str]:
  from vmc import analysis
  lines = ['| S | electrons | HF (pretraining basis, Ha) | E, iterations 1–100 | 401–500 '
           '| 901–1000 (Ha) | E − HF, 901–1000 (mHa) | variance of E_L, 901–1000 (Ha²) '
           '| wall s (pretraining + 1000 iterations) |', '|---|---|---|---|---|---|---|---|---|']
  for pp in ('False', 'True'):
    path = os.path.join(root, f's_pp_{pp}')
    if not os.path.exists(os.path.join(path, 'summary.json')):
      continue
    s, st = _summary(path), _stats(path)
    e, var = st['energy'], st['variance']
    means = [e[a:b].mean() for a, b in ((0, 100), (400, 500), (900, 1000))]
    electrons = analysis.system_of(path).n_electrons
    lines.append(
        f'| {s["hamiltonian"]} | {electrons} | {s["hf_energy"]:.4f} | '
        + ' | '.join(f'{m:.4f}' for m in means)
        + f' | {1e3 * (means[-1] - s["hf_energy"]):+.0f} | {np.median(var[900:]):.4g} | '
        f'{st["wall_time"][-1]:.0f} |')
  return lines


def speed(root: str) -> list[str]:
  path = os.path.join(root, 'benchmark.jsonl')
  if not os.path.exists(path):
    return []
  rows = [json.loads(line) for line in open(path) if line.strip()]
  lines = ['| atom | network | all-electron s/iter (N) | ccECP s/iter (N) | speed-up '
           '| peak GB (AE / ECP) |', '|---|---|---|---|---|---|']
  for r in rows:
    if r['hamiltonian'] != 'all-electron':
      continue
    e = next(x for x in rows if x['system'] == r['system'] + ' (ccECP)'
             and x['network'] == r['network'])
    lines.append(
        f'| {r["system"]} | {r["network"]} ({r["params"]:,} / {e["params"]:,} params) | '
        f'{r["s_per_iter"]:.3f} ({r["electrons"]}) | {e["s_per_iter"]:.3f} '
        f'({e["electrons"]}) | {r["s_per_iter"] / e["s_per_iter"]:.2f}x | '
        f'{r["peak_memory_gb"]:.2f} / {e["peak_memory_gb"]:.2f} |')
  return lines


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dir', default='checkpoints/ecp')
  args = parser.parse_args()
  for title, lines in (('Accuracy', accuracy(args.dir)),
                       ('First 1000 iterations', first_iterations(args.dir)),
                       ('Speed', speed(args.dir))):
    print(f'## {title}\n')
    print('\n'.join(lines) + '\n')


if __name__ == '__main__':
  main()
