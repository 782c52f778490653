"""An isolated atom: `vmc --config configs/atom.py --config.system.atom=Li`.

Production-sized defaults (vmc.config.default()); the spin defaults to the atom's Hund's
rule ground state. For a quick look, shrink batch_size, network and iterations.
"""

from vmc import config


def get_config():
  cfg = config.default()
  cfg.system.atom = 'Li'
  return cfg
