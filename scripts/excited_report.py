"""Markdown tables of excited-state runs against their references (docs/excited_states.md).

  python scripts/excited_report.py checkpoints/excited/he_s1_eval ... \
      [--fci checkpoints/excited/h2_fci.json]

For each run (vmc.analysis.summarize_run): every state's energy with its jackknife error,
its error against the exact level vmc ships (vmc/data/excited_states.csv) or against the
FCI state of the same index in --fci (scripts/excited_reference.py --out), the excitation
energies in eV and the oscillator strengths, with the references' beside them; then, for
runs of one system with several seeds, the spread of each state's energy over the seeds
next to the mean jackknife error (whether the error bars are honest).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

import numpy as np

from vmc import analysis, states


def rows(summary: dict, fci: dict | None) -> list[str]:
  name = os.path.basename(os.path.normpath(summary['run']))
  exact = {r['state']: r for r in summary.get('state_references', [])}
  out = []
  for i, (e, de) in enumerate(zip(summary['state_energies'], summary['state_energy_errors'],
                                  strict=True)):
    ref, ref_ev, ref_f = '-', '-', '-'
    if i in exact:
      ref = f'{exact[i]["label"]} {exact[i]["energy"]:.6f}: {exact[i]["error_mha"]:+.2f} mHa'
      if i:
        ref_ev = f'{(exact[i]["energy"] - exact[0]["energy"]) * states.EV_PER_HARTREE:.4f}'
    elif fci is not None and i < len(fci['energies']):
      ref = (f'FCI {fci["energies"][i]:.6f} (<S^2> {fci["s2"][i]:.2f}): '
             f'{1000 * (e - fci["energies"][i]):+.2f} mHa')
      ref_ev = f'{fci["excitation_energies_ev"][i]:.4f}' if i else '-'
      ref_f = f'{fci["oscillator_strengths"][i]:.4f}' if i else '-'
    ev = (f'{summary["excitation_energies_ev"][i]:.4f} ± '
          f'{summary["excitation_energy_errors_ev"][i]:.4f}' if i else '-')
    osc = summary.get('oscillator_strengths')
    f = (f'{osc[i]:.4f} ± {summary["oscillator_strength_errors"][i]:.4f}'
         if osc is not None and i else '-')
    s2 = summary.get('state_s2')
    s2_text = f'{s2[i]:.3f}' if s2 is not None else '-'
    out.append(f'| {name} | {i} | {e:.6f} ± {de:.6f} | {ref} | {ev} | {ref_ev} | {f} | '
               f'{ref_f} | {s2_text} |')
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('runs', nargs='+')
  parser.add_argument('--fci', default='', help='JSON of scripts/excited_reference.py --out')
  args = parser.parse_args(argv)
  fci = json.load(open(args.fci)) if args.fci else None
  print('| run | state | E (Ha) | reference: error | E − E₀ (eV) | reference (eV) | f₀ₖ | '
        'reference f₀ₖ | ⟨S²⟩ |')
  print('|---|---|---|---|---|---|---|---|---|')
  by_system = defaultdict(list)
  for run in args.runs:
    summary = dict(analysis.summarize_run(run), run=run)
    by_system[summary['system']].append(summary)
    print('\n'.join(rows(summary, fci if summary['system'] != 'He' else None)))
  for system, group in by_system.items():
    if len(group) < 2:
      continue
    energies = np.array([s['state_energies'] for s in group])
    errors = np.array([s['state_energy_errors'] for s in group])
    print(f'\n{system}, {len(group)} seeds: spread (standard deviation) of each state\'s '
          'energy over the seeds against the mean jackknife error, mHa:')
    for i in range(energies.shape[1]):
      print(f'- state {i}: mean {energies[:, i].mean():.6f} Ha, spread '
            f'{1000 * energies[:, i].std(ddof=1):.3f}, error bar {1000 * errors[:, i].mean():.3f}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
