import numpy as np
import pytest

from vmc import reference, systems
from vmc.errors import ConfigError


@pytest.mark.parametrize('atom, electrons', [
    ('H', (1, 0)), ('He', (1, 1)), ('Li', (2, 1)), ('Be', (2, 2)), ('B', (3, 2)),
    ('C', (4, 2)), ('N', (5, 2)), ('O', (5, 3)), ('F', (5, 4)), ('Ne', (5, 5)),
    ('Na', (6, 5)), ('Si', (8, 6)), ('P', (9, 6)), ('S', (9, 7)), ('Ar', (9, 9)),
    ('Cr', (15, 9)), ('Fe', (15, 11))])
def test_atoms_take_hunds_rule_ground_state(atom, electrons):
  assert systems.make_system(atom=atom).electrons == electrons


def test_atom_electrons_agree_with_reference_table():
  for row in reference.table():
    if row['kind'] == 'atom':
      s = systems.make_system(atom=row['system'])
      assert s.electrons == (int(row['electrons_up']), int(row['electrons_down']))


def test_ions_and_explicit_spin():
  li_plus = systems.make_system(atom='Li', charge=1)
  assert li_plus.electrons == (1, 1) and li_plus.charge == 1
  o_singlet = systems.make_system(atom='O', spin=0)
  assert o_singlet.electrons == (4, 4)
  assert systems.make_system(atom='Li', electrons=(3, 0)).electrons == (3, 0)


@pytest.mark.parametrize('kwargs, fragment', [
    (dict(atom='Xx'), "unknown element 'Xx'"),
    (dict(atom='Li', spin=2), 'system.spin=2'),
    (dict(atom='He', spin=3), 'system.spin=3'),
    (dict(atom='H', charge=1), 'system.charge=1'),
    (dict(atom='Li', molecule='LiH'), 'exactly one'),
    (dict(molecule='Benzene'), "'Benzene' is not a named molecule"),
    (dict(molecule=[('H', (0, 0))]), 'not (symbol, (x, y, z))'),
    (dict(molecule=[('H', (0, 0, 0))], units='pm'), 'system.units'),
    (dict(atom='Li', electrons=(2, 2), spin=2), 'system.spin=2'),
])
def test_bad_systems_name_the_key(kwargs, fragment):
  with pytest.raises(ConfigError, match=None) as err:
    systems.make_system(**kwargs)
  assert fragment in str(err.value)
  assert '\n' not in str(err.value)


def test_named_molecules_use_reference_geometries():
  for row in reference.table():
    if row['kind'] == 'molecule':
      s = systems.make_system(molecule=row['system'])
      assert reference.lookup(s) is not None, row['system']
  lih = systems.make_system(molecule='LiH')
  assert lih.electrons == (2, 2)
  np.testing.assert_allclose(np.linalg.norm(lih.positions[1] - lih.positions[0]), 3.015)


@pytest.mark.parametrize('name, bond, n_bonds, angle', [
    ('H2O', 0.9572, 2, 104.52), ('NH3', 1.0124, 3, 106.67), ('CH4', 1.087, 4, 109.4712)])
def test_polyatomic_geometries(name, bond, n_bonds, angle):
  s = systems.make_system(molecule=name)
  pos = s.positions
  vecs = pos[1:] - pos[0]
  np.testing.assert_allclose(np.linalg.norm(vecs, axis=1),
                             bond * systems.BOHR_PER_ANGSTROM, rtol=1e-6)
  assert len(vecs) == n_bonds
  cos = vecs[0] @ vecs[1] / np.linalg.norm(vecs[0]) / np.linalg.norm(vecs[1])
  np.testing.assert_allclose(np.degrees(np.arccos(cos)), angle, atol=1e-3)
  assert s.charge == 0 and s.spin == 0


def test_units_and_nuclear_repulsion():
  h2_bohr = systems.make_system(molecule=[('H', (0, 0, 0)), ('H', (0, 0, 1.4))])
  h2_ang = systems.make_system(molecule=[('H', (0, 0, 0)), ('H', (0, 0, 0.74))],
                               units='angstrom')
  np.testing.assert_allclose(h2_bohr.nuclear_repulsion(), 1 / 1.4)
  np.testing.assert_allclose(h2_ang.positions[1, 2], 0.74 / 0.52917721092)
  assert reference.lookup(h2_bohr) is None  # not the reference geometry
