"""Plot a diatomic's scan (scripts/scan.py) against a reference curve
(scripts/pyscf_forces.py): energy and force along the bond, with error bars.

  python scripts/plot_scan.py --scan checkpoints/forces/h2_scan \
      --reference docs/bench/forces_reference_h2_curve.json --out docs/h2_scan.png

The force plotted is the one on the second atom along the bond, F = -dE/dR (hartree/bohr);
the error bars are the reblocked ones of the scan's records. Needs matplotlib
(pip install 'vmc[plot]').
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def load(scan_dir: str) -> dict[str, np.ndarray]:
  with open(os.path.join(scan_dir, 'scan.json')) as f:
    points = json.load(f)['points']
  pos = np.array([p['positions'] for p in points])
  bond = pos[:, 1] - pos[:, 0]
  r = np.linalg.norm(bond, axis=1)
  unit = bond / r[:, None]
  force = np.array([np.dot(p['forces'][1], u) for p, u in zip(points, unit, strict=True)])
  force_err = np.array([np.sqrt(np.dot(np.square(p['forces_error'][1]), u ** 2))
                        for p, u in zip(points, unit, strict=True)])
  return dict(r=r, energy=np.array([p['energy'] for p in points]),
              energy_error=np.array([p['energy_error'] for p in points]), force=force,
              force_error=force_err)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--scan', required=True)
  p.add_argument('--reference', required=True)
  p.add_argument('--out', required=True)
  args = p.parse_args()
  import matplotlib  # noqa: PLC0415
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # noqa: PLC0415
  s = load(args.scan)
  with open(args.reference) as f:
    ref = json.load(f)
  fig, (ax_e, ax_f, ax_d) = plt.subplots(3, 1, figsize=(6, 9), sharex=True,
                                         gridspec_kw={'height_ratios': [3, 3, 2]})
  method = ref['method'].upper() + (' = FCI' if ref['method'] == 'ccsd' and
                                    ref['molecule'] == 'H2' else '')
  label = f'{method}/{ref["basis"]} (PySCF)'
  curve = ref.get('curve') or {'bond_length': [q['bond_length'] for q in ref['points']],
                               'energy': [q['energy'] for q in ref['points']]}
  ax_e.plot(curve['bond_length'], curve['energy'], 's-', color='gray', ms=3, label=label)
  ax_e.errorbar(s['r'], s['energy'], yerr=s['energy_error'], fmt='o', ms=4, capsize=3,
                label='vmc (warm-started scan)')
  ax_e.set_ylabel('energy (hartree)')
  ax_e.legend()
  refp = ref['points']
  ax_f.plot([q['bond_length'] for q in refp], [q['force'] for q in refp], 's-', color='gray',
            ms=4, label=f'-dE/dR, {label}')
  ax_f.errorbar(s['r'], s['force'], yerr=s['force_error'], fmt='o', ms=4, capsize=3,
                label='vmc zvzb force on the second atom')
  ax_f.axhline(0.0, color='k', lw=0.5)
  ax_f.set_ylabel('force (hartree/bohr)')
  ax_f.legend()
  # The force's deviation from the reference at the reference's bond lengths.
  ref_r = np.array([q['bond_length'] for q in refp])
  ref_f = np.array([q['force'] for q in refp])
  match = [int(np.argmin(np.abs(ref_r - r))) for r in s['r']]
  keep = np.abs(ref_r[match] - s['r']) < 1e-6
  ax_d.errorbar(s['r'][keep], 1000 * (s['force'][keep] - ref_f[match][keep]),
                yerr=1000 * s['force_error'][keep], fmt='o', ms=4, capsize=3)
  ax_d.axhline(0.0, color='gray', lw=1)
  ax_d.set_ylabel('vmc - reference\n(mhartree/bohr)')
  ax_d.set_xlabel('bond length (bohr)')
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
