"""A small Psiformer for a laptop CPU: 2 attention layers of 4 heads x 16, MLP width 64,
4 determinants, batch 256; everything else as configs/psiformer/default.py.

  vmc --config configs/psiformer/small.py --config.system.atom=Li
"""

from vmc import config


def get_config():
  cfg = config.default()
  cfg.system.atom = 'Li'
  cfg.batch_size = 256
  cfg.network.network_type = 'psiformer'
  cfg.network.determinants = 4
  cfg.network.psiformer.num_layers = 2
  cfg.network.psiformer.num_heads = 4
  cfg.network.psiformer.heads_dim = 16
  cfg.network.psiformer.mlp_hidden_dims = (64,)
  return cfg
