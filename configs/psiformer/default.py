"""Psiformer as published (von Glehn et al. 2023): 4 attention layers of 4 heads x 64, MLP
width 256, layer norm, log-rescaled inputs, 16 dense determinants with isotropic envelopes,
the simple_ee Jastrow; production batch and KFAC settings of vmc.config.default().

  vmc --config configs/psiformer/default.py --config.system.atom=Li
  vmc --config configs/psiformer/default.py --config.system.molecule=LiH
"""

from vmc import config


def get_config():
  cfg = config.default()
  cfg.system.atom = 'Li'
  cfg.network.network_type = 'psiformer'
  return cfg
