"""Reference energies and forces of diatomics from PySCF, for docs/forces.md.

  python scripts/pyscf_forces.py --molecule H2 --method ccsd --basis aug-cc-pv5z \
      --bond_lengths 1.2,1.4,1.6 --out docs/bench/forces_reference_h2.json
  python scripts/pyscf_forces.py --molecule H2 --method ccsd --basis aug-cc-pvqz \
      --bond_lengths 1.0,1.2,1.4,1.6,1.8,2.0,2.2,2.4 \
      --out docs/bench/forces_reference_h2_curve.json
  python scripts/pyscf_forces.py --molecule LiH --method 'ccsd(t)' \
      --basis Li:cc-pcvqz,H:cc-pvqz --bond_lengths 2.8,3.2 --scan 2.8,3.3,11 \
      --out docs/bench/forces_reference_lih.json

For each bond length R (bohr): the energy E(R) and the force on the second atom along the
bond, F = -dE/dR (hartree/bohr; the first atom feels -F), by the central difference
(E(R + h) - E(R - h)) / 2h with h = --step (0.005 bohr: the difference's truncation error,
h^2 E'''/6, is below 1e-6 Ha/bohr here). All electrons are correlated. --scan adds a curve
of energies (for plots) and the minimum of a quartic fit through the points around the
lowest one. For two electrons CCSD is full CI (the cluster expansion ends at doubles);
PySCF's FCI solver gives the same energies (checked in cc-pVTZ) but takes minutes per
point in the large bases.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from pyscf import cc, fci, gto, scf


def energy(molecule: str, r: float, method: str, basis: str) -> float:
  a, b = {'H2': ('H', 'H'), 'LiH': ('Li', 'H')}[molecule]
  if ':' in basis:  # per element, e.g. Li:cc-pcvqz,H:cc-pvqz
    basis = dict(item.split(':') for item in basis.split(','))
  mol = gto.M(atom=[[a, (0, 0, 0)], [b, (0, 0, r)]], unit='bohr', basis=basis, verbose=0)
  mf = scf.RHF(mol).run(conv_tol=1e-11)
  if method == 'fci':
    return float(fci.FCI(mf).kernel()[0])
  if method == 'ccsd':  # exact (= full CI) for two electrons, and far faster in PySCF
    return float(cc.CCSD(mf).run(conv_tol=1e-10).e_tot)
  if method == 'ccsd(t)':
    solver = cc.CCSD(mf).run(conv_tol=1e-10)
    return float(solver.e_tot + solver.ccsd_t())
  raise ValueError(method)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--molecule', choices=('H2', 'LiH'), required=True)
  p.add_argument('--method', choices=('fci', 'ccsd', 'ccsd(t)'), required=True)
  p.add_argument('--basis', required=True)
  p.add_argument('--bond_lengths', default='', help='comma-separated, bohr')
  p.add_argument('--scan', default='', help='start,stop,count of an energy curve (bohr)')
  p.add_argument('--step', type=float, default=0.005)
  p.add_argument('--out', required=True)
  args = p.parse_args()
  t0 = time.time()
  out: dict = dict(molecule=args.molecule, method=args.method, basis=args.basis,
                   units='hartree, bohr, hartree/bohr', step=args.step, points=[])
  for r in [float(v) for v in args.bond_lengths.split(',') if v]:
    e0 = energy(args.molecule, r, args.method, args.basis)
    ep = energy(args.molecule, r + args.step, args.method, args.basis)
    em = energy(args.molecule, r - args.step, args.method, args.basis)
    force = -(ep - em) / (2 * args.step)
    out['points'].append(dict(bond_length=r, energy=e0, force=force))
    print(f'R={r:.4f} E={e0:.8f} F=-dE/dR={force:+.6f}', flush=True)
  if args.scan:
    lo, hi, count = args.scan.split(',')
    grid = np.linspace(float(lo), float(hi), int(count))
    curve = [energy(args.molecule, float(r), args.method, args.basis) for r in grid]
    out['curve'] = dict(bond_length=grid.tolist(), energy=curve)
    k = int(np.argmin(curve))
    sel = slice(max(0, k - 3), k + 4)
    fit = np.polynomial.Polynomial.fit(grid[sel], np.asarray(curve)[sel], 4)
    fine = np.linspace(grid[sel][0], grid[sel][-1], 20001)
    out['minimum'] = float(fine[np.argmin(fit(fine))])
    print(f'curve: {len(grid)} points; minimum of the fit at R={out["minimum"]:.4f}')
  out['wall_seconds'] = time.time() - t0
  with open(args.out, 'w') as f:
    json.dump(out, f, indent=2)
    f.write('\n')


if __name__ == '__main__':
  main()
