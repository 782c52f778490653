"""A geometry of your own: LiH stretched to 4.0 bohr, given in angstrom.

vmc --config configs/example_geometry.py --config.batch_size=1024
"""

from vmc import config


def get_config():
  cfg = config.default()
  cfg.system.molecule = [('Li', (0.0, 0.0, 0.0)), ('H', (0.0, 0.0, 2.1167))]
  cfg.system.units = 'angstrom'
  cfg.system.charge = 0
  cfg.system.spin = 0
  return cfg
