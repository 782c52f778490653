"""Reference energies of ccECP atoms from PySCF (the rows of vmc/data/energies_ecp.csv).

  python scripts/ecp_references.py [--atoms Li,Na,Be,Mg] > rows.csv

One valence electron (Li, Na): ROHF is exact for one electron; in ccECP-aug-cc-pV5Z it is
at the basis limit (the change from aug-cc-pVQZ is printed). Two valence electrons (Be,
Mg): CCSD is full CI for two electrons; aug-cc-pVQZ and aug-cc-pV5Z, and the complete-basis
estimate E_HF(5Z) + (125 E_c(5Z) - 64 E_c(QZ)) / 61 (E_c ~ X^-3). Energies in hartree, the
ccECP Hamiltonian (not comparable with all-electron energies).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time

from vmc import systems

BASES = ('ccecp-aug-cc-pvqz', 'ccecp-aug-cc-pv5z')


def _energies(symbol: str, basis: str) -> tuple[float, float | None]:
  """(Hartree-Fock, full CI or None for one electron) of the atom in `basis`."""
  from pyscf import cc, gto, scf
  atom = systems.make_system(atom=symbol, pseudopotential='ccecp')
  mol = gto.M(atom=f'{symbol} 0 0 0', basis=basis, ecp='ccecp', spin=atom.spin, verbose=0)
  mf = (scf.ROHF(mol) if atom.spin else scf.RHF(mol)).run()
  if atom.n_electrons == 1:
    return float(mf.e_tot), None
  if atom.n_electrons != 2:
    raise SystemExit(f'{symbol} has {atom.n_electrons} valence electrons; this script does '
                     'one- and two-electron atoms (where ROHF / CCSD are exact)')
  return float(mf.e_tot), float(cc.CCSD(mf).run().e_tot)


def row(symbol: str) -> list:
  atom = systems.make_system(atom=symbol, pseudopotential='ccecp')
  t0 = time.time()
  (hf_q, fci_q), (hf_5, fci_5) = (_energies(symbol, b) for b in BASES)
  print(f'# {symbol}: HF aQZ {hf_q:.7f} a5Z {hf_5:.7f}; FCI aQZ {fci_q} a5Z {fci_5} '
        f'({time.time() - t0:.0f} s)', file=sys.stderr)
  up, down = atom.electrons
  common = [symbol, 'atom', '', up, down, atom.hamiltonian]
  if fci_5 is None:
    return common + [f'{hf_5:.7f}', f'{hf_5:.7f}', 'exact (one electron)',
                     f'PySCF 2.14 ROHF/ccECP-aug-cc-pV5Z (change from aug-cc-pVQZ '
                     f'{1e3 * (hf_5 - hf_q):+.4f} mHa); scripts/ecp_references.py']
  assert fci_q is not None
  cbs = hf_5 + (125 * (fci_5 - hf_5) - 64 * (fci_q - hf_q)) / 61
  return common + [f'{cbs:.7f}', f'{hf_5:.7f}', 'FCI CBS estimate',
                   f'PySCF 2.14 FCI (= CCSD for two electrons): aug-cc-pVQZ {fci_q:.7f}, '
                   f'aug-cc-pV5Z {fci_5:.7f}; X^-3 extrapolation of the correlation energy; '
                   'scripts/ecp_references.py']


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--atoms', default='Li,Na,Be,Mg')
  args = parser.parse_args()
  out = csv.writer(sys.stdout, lineterminator='\n')
  out.writerow(['system', 'kind', 'geometry_bohr', 'electrons_up', 'electrons_down',
                'hamiltonian', 'e_exact', 'e_hf_limit', 'reference_type', 'source'])
  for symbol in args.atoms.split(','):
    out.writerow(row(symbol.strip()))
    sys.stdout.flush()


if __name__ == '__main__':
  main()
