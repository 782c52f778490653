"""A named molecule: `vmc --config configs/molecule.py --config.system.molecule=LiH`.

Names and geometries: vmc.systems.MOLECULES (H2, LiH, Li2, N2, CO, H2O, NH3, CH4), in bohr,
diatomics at the geometries of the exact energies in vmc/data/energies.csv. For a geometry
of your own, copy this file and set `cfg.system.molecule` to a list of
(symbol, (x, y, z)) with `cfg.system.units` = 'bohr' or 'angstrom', as in
configs/example_geometry.py.
"""

from vmc import config


def get_config():
  cfg = config.default()
  cfg.system.molecule = 'LiH'
  return cfg
