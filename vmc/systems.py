"""Atoms, molecules, electron counts and units.

A `System` is the resolved physical problem: nuclear charges and positions in bohr, and the
number of spin-up and spin-down electrons. Everything downstream (network, Hamiltonian,
sampler) reads only this.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from vmc import ecp_tables, nuclei
from vmc.errors import ConfigError

BOHR_PER_ANGSTROM = 1.0 / 0.52917721092  # CODATA 2010, as used by PySCF.

ELEMENTS = (
    'H', 'He', 'Li', 'Be', 'B', 'C', 'N', 'O', 'F', 'Ne', 'Na', 'Mg', 'Al', 'Si', 'P', 'S',
    'Cl', 'Ar', 'K', 'Ca', 'Sc', 'Ti', 'V', 'Cr', 'Mn', 'Fe', 'Co', 'Ni', 'Cu', 'Zn', 'Ga',
    'Ge', 'As', 'Se', 'Br', 'Kr')
ATOMIC_NUMBER = {symbol: z for z, symbol in enumerate(ELEMENTS, start=1)}

# 2S of the ground state of the neutral atom with Z electrons (Hund's rules; Cr and Cu
# take the 3d^5 4s^1 and 3d^10 4s^1 configurations). Indexed by electron count.
GROUND_STATE_SPIN = (
    None, 1, 0, 1, 0, 1, 2, 3, 2, 1, 0, 1, 0, 1, 2, 3, 2, 1, 0, 1, 0, 1, 2, 3, 6, 5, 4,
    3, 2, 1, 0, 1, 2, 3, 2, 1, 0)


@dataclasses.dataclass(frozen=True)
class Atom:
  symbol: str
  coords: tuple[float, float, float]  # bohr
  ecp: bool = False  # carries the system's pseudopotential
  core: int = 0  # electrons the pseudopotential replaces

  @property
  def atomic_number(self) -> int:
    return ATOMIC_NUMBER[self.symbol]

  @property
  def charge(self) -> int:
    """The nuclear charge the electrons see: Z, less the core of a pseudopotential."""
    return ATOMIC_NUMBER[self.symbol] - self.core


@dataclasses.dataclass(frozen=True)
class System:
  """A resolved system: nuclei in bohr and electrons per spin (valence electrons only
  when atoms carry a pseudopotential; charges are then the effective ones)."""
  name: str
  atoms: tuple[Atom, ...]
  electrons: tuple[int, int]  # (n_up, n_down)
  pseudopotential: str = ''  # e.g. 'ccecp' for the atoms with ecp=True; '' all-electron

  @property
  def hamiltonian(self) -> str:
    """'all-electron', or e.g. 'ccecp[Na]': which Hamiltonian an energy belongs to."""
    symbols = sorted({a.symbol for a in self.atoms if a.ecp})
    return f'{self.pseudopotential}[{",".join(symbols)}]' if symbols else 'all-electron'

  @property
  def positions(self) -> np.ndarray:
    """(n_atoms, 3) nuclear positions in bohr."""
    return np.array([a.coords for a in self.atoms], dtype=np.float64).reshape(-1, 3)

  @property
  def charges(self) -> np.ndarray:
    """(n_atoms,) nuclear charges."""
    return np.array([a.charge for a in self.atoms], dtype=np.float64)

  @property
  def n_electrons(self) -> int:
    return sum(self.electrons)

  @property
  def charge(self) -> int:
    return int(self.charges.sum()) - self.n_electrons

  @property
  def spin(self) -> int:
    """2S = n_up - n_down."""
    return self.electrons[0] - self.electrons[1]

  def nuclear_repulsion(self) -> float:
    """Nucleus-nucleus Coulomb energy, hartree (vmc.nuclei)."""
    return nuclei.repulsion(self.positions, self.charges)


def _tetrahedral_xh4(center: str, r: float) -> list[tuple[str, tuple[float, float, float]]]:
  s = r / math.sqrt(3.0)
  return [(center, (0.0, 0.0, 0.0))] + [
      ('H', (s * a, s * b, s * c))
      for a, b, c in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1))]


def _pyramidal_xh3(center: str, r: float,
                   angle_deg: float) -> list[tuple[str, tuple[float, float, float]]]:
  """XH3 with C3v symmetry, bond length r (bohr) and H-X-H angle; X at the origin."""
  theta = math.radians(angle_deg)
  # alpha is the angle between a bond and the C3 axis: cos(theta) = 1 - 1.5 sin^2(alpha).
  sin2 = 2.0 * (1.0 - math.cos(theta)) / 3.0
  sin_a = math.sqrt(sin2)
  cos_a = math.sqrt(1.0 - sin2)
  atoms = [(center, (0.0, 0.0, 0.0))]
  for k in range(3):
    phi = 2.0 * math.pi * k / 3.0
    atoms.append(('H', (r * sin_a * math.cos(phi), r * sin_a * math.sin(phi), r * cos_a)))
  return atoms


def _bent_xh2(center: str, r: float,
              angle_deg: float) -> list[tuple[str, tuple[float, float, float]]]:
  half = math.radians(angle_deg) / 2.0
  return [(center, (0.0, 0.0, 0.0)),
          ('H', (r * math.sin(half), 0.0, r * math.cos(half))),
          ('H', (-r * math.sin(half), 0.0, r * math.cos(half)))]


_A = BOHR_PER_ANGSTROM
# Named molecules, coordinates in bohr. Diatomics at the geometries of the exact or
# reference energies in vmc/data/energies.csv; polyatomics at experimental equilibrium
# geometries (NIST CCCBDB): H2O r=0.9572 A, 104.52 deg; NH3 r=1.0124 A, 106.67 deg;
# CH4 r=1.087 A, tetrahedral; CO2 r=1.1600 A, linear (22 electrons: a size for benchmarks,
# with no reference energy here).
MOLECULES: dict[str, list[tuple[str, tuple[float, float, float]]]] = {
    'H2': [('H', (0.0, 0.0, 0.0)), ('H', (0.0, 0.0, 1.4011))],
    'LiH': [('Li', (0.0, 0.0, 0.0)), ('H', (0.0, 0.0, 3.015))],
    'Li2': [('Li', (0.0, 0.0, 0.0)), ('Li', (0.0, 0.0, 5.051))],
    'N2': [('N', (0.0, 0.0, 0.0)), ('N', (0.0, 0.0, 2.068))],
    'CO': [('C', (0.0, 0.0, 0.0)), ('O', (0.0, 0.0, 2.173))],
    'H2O': _bent_xh2('O', 0.9572 * _A, 104.52),
    'NH3': _pyramidal_xh3('N', 1.0124 * _A, 106.67),
    'CH4': _tetrahedral_xh4('C', 1.087 * _A),
    'CO2': [('C', (0.0, 0.0, 0.0)), ('O', (0.0, 0.0, 1.1600 * _A)),
            ('O', (0.0, 0.0, -1.1600 * _A))],
}


def _check_symbol(symbol: str, key: str) -> str:
  if symbol not in ATOMIC_NUMBER:
    for known in ELEMENTS:
      if known.lower() == str(symbol).lower():
        return known
    raise ConfigError(
        f'{key}: unknown element {symbol!r}; use a symbol from H to Kr, e.g. Li or Ne')
  return symbol


MIN_DISTANCE = 0.01  # bohr: closer nuclei are a typo, and a singular Hamiltonian


def _parse_atoms(molecule: Any, units: str) -> tuple[Atom, ...]:  # molecule: unchecked input
  if units not in ('bohr', 'angstrom'):
    raise ConfigError(f"system.units={units!r} is not known; use 'bohr' or 'angstrom'")
  scale = BOHR_PER_ANGSTROM if units == 'angstrom' else 1.0
  atoms = []
  for item in molecule:
    try:
      symbol, coords = item
      coords = tuple(float(c) * scale for c in coords)
      if len(coords) != 3 or not np.all(np.isfinite(coords)):
        raise ValueError
    except (TypeError, ValueError):
      raise ConfigError(
          f'system.molecule entry {item!r} is not (symbol, (x, y, z)) with finite '
          "coordinates; write e.g. [('H', (0, 0, 0)), ('H', (0, 0, 1.4))]") from None
    atoms.append(Atom(_check_symbol(symbol, 'system.molecule'), coords))
  if not atoms:
    raise ConfigError('system.molecule is empty; give at least one (symbol, (x, y, z))')
  for i, a in enumerate(atoms):
    for j in range(i):
      distance = float(np.linalg.norm(np.subtract(a.coords, atoms[j].coords)))
      if distance < MIN_DISTANCE:
        raise ConfigError(
            f'system.molecule: atoms {j + 1} ({atoms[j].symbol}) and {i + 1} ({a.symbol}) '
            f'are {distance:.3g} bohr apart; nuclei must be at least {MIN_DISTANCE} bohr '
            'apart (check the coordinates and system.units)')
  return tuple(atoms)


def _with_pseudopotential(atoms: tuple[Atom, ...], kind: str,
                          symbols: Sequence[str]) -> tuple[Atom, ...]:
  """The atoms with `kind` ECPs on the elements `symbols` (empty: every atom beyond He)."""
  present = {a.symbol for a in atoms}
  chosen = {_check_symbol(s, 'system.pp.symbols') for s in symbols}
  missing = sorted(chosen - present)
  if missing:
    raise ConfigError(f'system.pp.symbols names {missing[0]}, which is not in the system; '
                      f'use elements of {sorted(present)}')
  if not symbols:
    chosen = {s for s in present if ATOMIC_NUMBER[s] > 2}
  if not chosen:
    raise ConfigError('system.use_pp=True but no atom heavier than He; name the elements '
                      "in system.pp.symbols (e.g. ('H',)) or set system.use_pp=False")
  return tuple(dataclasses.replace(a, ecp=True, core=ecp_tables.load(kind, a.symbol).core)
               if a.symbol in chosen else a for a in atoms)


def make_system(*, atom: str | None = None, molecule: str | Sequence[Any] | None = None,
                charge: int = 0, spin: int | None = None,
                electrons: Sequence[int] | None = None, units: str = 'bohr',
                pseudopotential: str = '', pp_symbols: Sequence[str] = ()) -> System:
  """Resolves the `system` config section into a `System`.

  Exactly one of `atom` (element symbol) or `molecule` (a name from MOLECULES, or a
  sequence of (symbol, (x, y, z)) in `units`) is given. Electrons are `electrons`
  (n_up, n_down) if set, else derived from the nuclear charges, `charge` and `spin` (2S);
  a spin of None takes the ground state of the isolated atom (Hund's rule) for atoms and
  the lowest spin compatible with the electron count for molecules.
  With a `pseudopotential` (e.g. 'ccecp') on the elements `pp_symbols` (empty: all beyond
  He), those atoms lose their core electrons: charges are effective, electrons valence.
  """
  if bool(atom) == (molecule is not None and molecule != ''):
    raise ConfigError(
        'set exactly one of system.atom (e.g. Li) or system.molecule (e.g. LiH or a '
        'list of (symbol, (x, y, z)))')
  if atom:
    symbol = _check_symbol(atom, 'system.atom')
    atoms: tuple[Atom, ...] = (Atom(symbol, (0.0, 0.0, 0.0)),)
    name = symbol
  elif isinstance(molecule, str):
    matches = [k for k in MOLECULES if k.lower() == molecule.lower()]
    if not matches:
      raise ConfigError(
          f'system.molecule={molecule!r} is not a named molecule; use one of '
          f'{", ".join(MOLECULES)} or give a list of (symbol, (x, y, z))')
    name = matches[0]
    atoms = _parse_atoms(MOLECULES[name], 'bohr')
  else:
    atoms = _parse_atoms(molecule, units)
    name = ''.join(a.symbol for a in atoms)
  if pseudopotential:
    atoms = _with_pseudopotential(atoms, pseudopotential, pp_symbols)
  core = sum(a.core for a in atoms)

  z_total = sum(a.charge for a in atoms)
  if electrons is not None:
    try:
      n_up, n_down = (int(n) for n in electrons)
    except (TypeError, ValueError):
      raise ConfigError(
          f'system.electrons={electrons!r} is not (n_up, n_down); write e.g. (2, 1)'
          ) from None
    if n_up < 0 or n_down < 0 or n_up + n_down == 0:
      raise ConfigError(f'system.electrons={electrons!r} needs non-negative counts, '
                        'at least one electron')
    if z_total - (n_up + n_down) != charge and charge != 0:
      raise ConfigError(
          f'system.electrons={tuple(electrons)} gives charge {z_total - n_up - n_down} '
          f'but system.charge={charge}; set one of them consistently')
    if spin is not None and spin != n_up - n_down:
      raise ConfigError(
          f'system.electrons={tuple(electrons)} has 2S={n_up - n_down} but '
          f'system.spin={spin}; drop system.spin or make them agree')
  else:
    n_elec = z_total - charge
    if n_elec <= 0:
      raise ConfigError(
          f'system.charge={charge} leaves {n_elec} electrons for nuclear charge {z_total}; '
          'use a smaller positive charge')
    if spin is None:
      if len(atoms) == 1 and n_elec + core < len(GROUND_STATE_SPIN):
        # The core is closed-shell: the valence shell has the atom's (Hund's rule) spin.
        spin = cast(int, GROUND_STATE_SPIN[n_elec + core])  # > 0 electrons: never None
      else:
        spin = n_elec % 2
    if spin < 0 or spin > n_elec or (n_elec - spin) % 2:
      raise ConfigError(
          f'system.spin={spin} (2S) is impossible with {n_elec} electrons; it must be '
          f'between 0 and {n_elec} with the parity of {n_elec}')
    n_up, n_down = (n_elec + spin) // 2, (n_elec - spin) // 2
  return System(name=name, atoms=atoms, electrons=(n_up, n_down),
                pseudopotential=pseudopotential)


def describe(system: System) -> str:
  """Name, charge and electrons per spin, e.g. 'H- (electrons 1 up, 1 down)'."""
  q = system.charge
  sign = '' if q == 0 else f'{"" if abs(q) == 1 else abs(q)}{"+" if q > 0 else "-"}'
  up, down = system.electrons
  ecp = ''
  if system.pseudopotential:
    core = sum(a.core for a in system.atoms)
    ecp = f'; {system.hamiltonian}, {core} core electrons replaced'
  return f'{system.name}{sign} (electrons {up} up, {down} down{ecp})'
