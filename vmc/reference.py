"""Exact and reference energies shipped with vmc, with sources: all-electron ones in
vmc/data/energies.csv, those of pseudopotential Hamiltonians apart in
vmc/data/energies_ecp.csv (an energy with an ECP is not comparable with an all-electron
one; its `hamiltonian` column names the ECP and the elements that carry it)."""

from __future__ import annotations

import csv
import functools
import os
from typing import NamedTuple

import numpy as np

from vmc import systems

_PATH = os.path.join(os.path.dirname(__file__), 'data', 'energies.csv')
_ECP_PATH = os.path.join(os.path.dirname(__file__), 'data', 'energies_ecp.csv')
_EXCITED_PATH = os.path.join(os.path.dirname(__file__), 'data', 'excited_states.csv')


class Reference(NamedTuple):
  energy: float  # hartree
  kind: str  # 'exact', 'exact estimate', 'CCSD(T) estimate', ...
  source: str
  hf_limit: float | None


@functools.lru_cache(maxsize=2)
def table(ecp: bool = False) -> tuple[dict, ...]:
  with open(_ECP_PATH if ecp else _PATH, newline='') as f:
    return tuple(csv.DictReader(f))


def _geometry(text: str) -> list[tuple[str, np.ndarray]]:
  atoms = []
  for part in text.split(';'):
    fields = part.split()
    atoms.append((fields[0], np.array([float(v) for v in fields[1:4]])))
  return atoms


def lookup(system: systems.System, tol: float = 1e-3) -> Reference | None:
  """The table's entry for this system: same name, Hamiltonian, electrons and (for
  molecules) geometry."""
  for row in table(bool(system.pseudopotential)):
    if row['system'] != system.name:
      continue
    if row.get('hamiltonian', 'all-electron') != system.hamiltonian:
      continue
    if (int(row['electrons_up']), int(row['electrons_down'])) != tuple(system.electrons):
      continue
    if row['geometry_bohr']:
      ref = _geometry(row['geometry_bohr'])
      if len(ref) != len(system.atoms) or any(
          s != a.symbol or np.max(np.abs(pos - np.array(a.coords))) > tol
          for (s, pos), a in zip(ref, system.atoms, strict=True)):
        continue
    elif len(system.atoms) != 1:
      continue
    hf = float(row['e_hf_limit']) if row['e_hf_limit'] else None
    return Reference(float(row['e_exact']), row['reference_type'], row['source'], hf)
  return None


class State(NamedTuple):
  number: int  # 0 the ground state, in order of energy within the (n_up, n_down) sector
  label: str  # term symbol, e.g. 2^3S
  energy: float  # hartree
  source: str


def excited_states(system: systems.System) -> list[State]:
  """Exact energies of the lowest states of an atom's (n_up, n_down) sector, where vmc
  ships them (vmc/data/excited_states.csv), for excited-state runs (vmc.states)."""
  if len(system.atoms) != 1 or system.pseudopotential:
    return []
  with open(_EXCITED_PATH, newline='') as f:
    rows = list(csv.DictReader(f))
  return [State(int(r['state']), r['label'], float(r['energy']), r['source']) for r in rows
          if r['system'] == system.name
          and (int(r['electrons_up']), int(r['electrons_down'])) == tuple(system.electrons)]
