"""Exact and reference energies shipped with vmc (vmc/data/energies.csv, with sources)."""

from __future__ import annotations

import csv
import functools
import os
from typing import NamedTuple

import numpy as np

from vmc import systems

_PATH = os.path.join(os.path.dirname(__file__), 'data', 'energies.csv')


class Reference(NamedTuple):
  energy: float  # hartree
  kind: str  # 'exact', 'exact estimate', 'CCSD(T) estimate', ...
  source: str
  hf_limit: float | None


@functools.lru_cache(maxsize=1)
def table() -> tuple[dict, ...]:
  with open(_PATH, newline='') as f:
    return tuple(csv.DictReader(f))


def _geometry(text: str) -> list[tuple[str, np.ndarray]]:
  atoms = []
  for part in text.split(';'):
    fields = part.split()
    atoms.append((fields[0], np.array([float(v) for v in fields[1:4]])))
  return atoms


def lookup(system: systems.System, tol: float = 1e-3) -> Reference | None:
  """The table's entry for this system: same name, electrons and (for molecules) geometry."""
  for row in table():
    if row['system'] != system.name:
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
