"""Reference excited states from PySCF: full CI of a small molecule or atom in a large basis.

  python scripts/excited_reference.py --molecule=H2 --basis=aug-cc-pvtz --roots=6

Prints (and with --out writes as JSON) the lowest FCI states of the system's (n_up, n_down)
sector, the sector an excited-state vmc run (system.states) samples: their energies,
<S^2> (singlets and the M_S = 0 components of triplets both appear), excitation energies
(Ha, eV) and the oscillator strengths f_0k = 2/3 (E_k - E_0) |<0|d|k>|^2 from the FCI
transition density matrices. Geometries as vmc resolves them (system.molecule names or
an atom), so the numbers compare to docs/excited_states.md runs directly.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

from vmc import states, systems

FLAGS = flags.FLAGS
flags.DEFINE_string('molecule', None, 'a name of vmc.systems.MOLECULES (e.g. H2, LiH)')
flags.DEFINE_string('atom', None, 'an element symbol (instead of --molecule)')
flags.DEFINE_string('basis', 'aug-cc-pvtz', 'Gaussian basis of the FCI')
flags.DEFINE_integer('roots', 6, 'FCI states to compute')
flags.DEFINE_string('out', '', 'JSON file for the table (empty: print only)')


def fci_states(system: systems.System, basis: str, roots: int) -> dict:
  """The lowest `roots` FCI states of `system` in `basis` (all in hartree / atomic units)."""
  from pyscf import fci, gto, scf
  mol = gto.M(atom=[(a.symbol, a.coords) for a in system.atoms], unit='bohr', basis=basis,
              charge=system.charge, spin=system.spin, verbose=0)
  mf = scf.RHF(mol) if system.spin == 0 else scf.ROHF(mol)
  mf.kernel()
  solver = fci.FCI(mf)
  solver.nroots = roots
  solver.conv_tol = 1e-10
  energies, vectors = solver.kernel()
  energies = np.atleast_1d(energies)
  norb, nelec = mf.mo_coeff.shape[1], mol.nelec
  s2 = [float(fci.spin_op.spin_square(v, norb, nelec)[0]) for v in vectors]
  # Transition dipoles <0|sum_i r_i|k> from transition 1-RDMs in the MO basis.
  ao_r = mol.intor('int1e_r')  # (3, n_ao, n_ao)
  mo_r = np.einsum('xpq,pi,qj->xij', ao_r, mf.mo_coeff, mf.mo_coeff)
  strengths = [0.0]
  for k in range(1, len(energies)):
    t = fci.direct_spin1.trans_rdm1(vectors[0], vectors[k], norb, nelec)
    d = np.einsum('xij,ij->x', mo_r, t)
    strengths.append(float(2 / 3 * (energies[k] - energies[0]) * np.sum(d ** 2)))
  e0 = float(energies[0])
  return {
      'system': system.name, 'basis': basis, 'method': 'FCI (PySCF)', 'hf_energy': float(mf.e_tot),
      'energies': [float(e) for e in energies], 's2': s2,
      'excitation_energies_ha': [float(e) - e0 for e in energies],
      'excitation_energies_ev': [(float(e) - e0) * states.EV_PER_HARTREE for e in energies],
      'oscillator_strengths': strengths}


def main(argv: list[str]) -> None:
  del argv
  if bool(FLAGS.molecule) == bool(FLAGS.atom):
    raise app.UsageError('give exactly one of --molecule and --atom')
  system = systems.make_system(atom=FLAGS.atom, molecule=FLAGS.molecule)
  table = fci_states(system, FLAGS.basis, FLAGS.roots)
  print(f'{table["system"]}: FCI/{FLAGS.basis}, HF {table["hf_energy"]:.6f} Ha')
  print(' k   E (Ha)        <S^2>   E - E_0 (Ha)   (eV)      f_0k')
  for k, e in enumerate(table['energies']):
    print(f'{k:2d}  {e:12.6f}  {table["s2"][k]:6.3f}  {table["excitation_energies_ha"][k]:12.6f}'
          f'  {table["excitation_energies_ev"][k]:8.4f}  {table["oscillator_strengths"][k]:.4f}')
  if FLAGS.out:
    with open(FLAGS.out, 'w') as f:
      json.dump(table, f, indent=2)


if __name__ == '__main__':
  app.run(main)
