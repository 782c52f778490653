"""Tables of docs/forces.md from the results of scripts/forces_runs.sh.

  python scripts/forces_report.py --runs checkpoints/forces --reference docs/bench

For every diatomic point: the VMC energy and the zvzb force on the second atom along the
bond (hartree/bohr), against the reference -dE/dR of scripts/pyscf_forces.py at the same
bond length, the difference in units of the error bar, the hf and zv estimates, and the
variance ratios of the estimators (squared ratios of their reblocked errors over the same
iterations); for the relaxations, the trajectory of bond lengths and the final distance
from the reference minimum; for the warm and cold scans, iterations and wall seconds per
geometry.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def _load(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except OSError:
    return None


def _bond(p: dict) -> tuple[float, np.ndarray]:
  pos = np.asarray(p['positions'])
  d = pos[1] - pos[0]
  return float(np.linalg.norm(d)), d / np.linalg.norm(d)


def _along(p: dict, key: str) -> tuple[float, float]:
  _, u = _bond(p)
  return float(np.dot(p[key][1], u)), float(np.sqrt(np.dot(np.square(p[key + '_error'][1]),
                                                           u ** 2)))


def _reference_force(refs: list[dict], r: float) -> tuple[float, str] | None:
  for ref in refs:
    for q in ref['points']:
      if abs(q['bond_length'] - r) < 1e-6:
        return q['force'], f'{ref["method"].upper()}/{ref["basis"]}'
  return None


def points_table(title: str, record: dict, refs: list[dict]) -> list[str]:
  lines = [f'### {title}', '',
           '| R (bohr) | E (Ha) | F zvzb | reference −dE/dR | (F − ref)/σ | F zv | F hf | '
           'var hf/zvzb | var zv/zvzb | train it, s | eval it, s |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for p in record['points']:
    r, _ = _bond(p)
    f, e = _along(p, 'forces')
    fzv, ezv = _along(p, 'forces_zv')
    fhf, ehf = _along(p, 'forces_hf')
    ref = _reference_force(refs, r)
    ref_text = f'{ref[0]:+.5f}' if ref else '—'
    dev = f'{(f - ref[0]) / e:+.1f}' if ref else '—'
    lines.append(
        f'| {r:.3f} | {p["energy"]:.6f} ± {p["energy_error"]:.6f} | {f:+.5f} ± {e:.5f} | '
        f'{ref_text} | {dev} | {fzv:+.5f} ± {ezv:.5f} | {fhf:+.4f} ± {ehf:.4f} | '
        f'{(ehf / e) ** 2:.0f} | {(ezv / e) ** 2:.2f} | {p["train_iterations"]}, '
        f'{p["train_seconds"]:.0f} | {p["eval_iterations"]}, {p["eval_seconds"]:.0f} |')
  return lines + ['']


def relax_table(title: str, record: dict, minimum: float | None) -> list[str]:
  lines = [f'### {title}', '', '| step | R (bohr) | E (Ha) | F zvzb along the bond | '
           'train it | seconds (train + eval) |', '|---|---|---|---|---|---|']
  total = 0.0
  for k, p in enumerate(record['points']):
    r, _ = _bond(p)
    f, e = _along(p, 'forces')
    seconds = (p['train_seconds'] or 0.0) + (p['eval_seconds'] or 0.0)
    total += seconds
    lines.append(f'| {k} | {r:.4f} | {p["energy"]:.6f} ± {p["energy_error"]:.6f} | '
                 f'{f:+.5f} ± {e:.5f} | {p["train_iterations"]} | {seconds:.0f} |')
  r_final, _ = _bond(record['points'][-1])
  r_model, _ = _bond({'positions': record['next_positions']})
  ref = (lambda r: f' ({r - minimum:+.4f} from the reference minimum {minimum:.4f})'
         if minimum is not None else '')
  lines.append('')
  lines.append(f'Converged: {record.get("converged")}; last R = {r_final:.4f} bohr'
               f'{ref(r_final)}; the model\'s minimum (the next step) R = {r_model:.4f}'
               f'{ref(r_model)}; {total:.0f} s of training and evaluation in all.')
  return lines + ['']


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--runs', default='checkpoints/forces')
  p.add_argument('--reference', default='docs/bench')
  args = p.parse_args()
  refs = {name: _load(os.path.join(args.reference, f'forces_reference_{name}.json'))
          for name in ('h2', 'h2_curve', 'lih')}
  h2_refs = [r for r in (refs['h2'], refs['h2_curve']) if r]
  lih_refs = [r for r in (refs['lih'],) if r]
  out: list[str] = []
  for name, title, rs in (('h2_cold', 'H2, cold starts', h2_refs),
                          ('h2_scan', 'H2 scan, warm starts', h2_refs),
                          ('lih', 'LiH (second point warm-started)', lih_refs)):
    record = _load(os.path.join(args.runs, name, 'scan.json'))
    if record:
      out += points_table(title, record, rs)
  for name, title, minimum in (('h2_relax', 'H2 relaxation from 1.2 bohr', 1.4011),
                               ('lih_relax', 'LiH relaxation from 2.8 bohr',
                                refs['lih'].get('minimum') if refs['lih'] else None)):
    record = _load(os.path.join(args.runs, name, 'relax.json'))
    if record:
      out += relax_table(title, record, minimum)
  print('\n'.join(out))


if __name__ == '__main__':
  main()
