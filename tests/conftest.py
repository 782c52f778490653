"""Shared fixtures: tiny configs so the whole suite stays within minutes on 2 cores."""

import pytest

from vmc import config as config_lib


def tiny_config(atom='He', optimizer='kfac', **overrides):
  cfg = config_lib.default()
  cfg.system.atom = atom
  cfg.batch_size = 64
  cfg.network.determinants = 2
  cfg.network.ferminet.hidden_dims = ((16, 4), (16, 4))
  cfg.optim.optimizer = optimizer
  cfg.optim.iterations = 10
  cfg.mcmc.burn_in = 10
  cfg.mcmc.steps = 5
  cfg.pretrain.method = 'none'  # tests that need it turn it on
  cfg.pretrain.iterations = 100
  cfg.debug.deterministic = True
  cfg.log.print_every_seconds = 1000.0
  for key, value in overrides.items():
    node = cfg
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return cfg


@pytest.fixture
def make_tiny_config():
  return tiny_config


# Every network option, tiny: (name, config overrides). Tests of antisymmetry, Laplacians
# and training run over these.
TINY_PSIFORMER = {'network.network_type': 'psiformer', 'network.psiformer.num_layers': 2,
                  'network.psiformer.num_heads': 2, 'network.psiformer.heads_dim': 4,
                  'network.psiformer.mlp_hidden_dims': (8,)}
NETWORK_VARIANTS = [
    ('ferminet', {}),
    ('ferminet_shared_isotropic_jastrow', {'network.envelope_shared': True,
                                           'network.jastrow': 'simple_ee'}),
    ('ferminet_diagonal', {'network.envelope_type': 'diagonal'}),
    ('ferminet_shared_diagonal', {'network.envelope_type': 'diagonal',
                                  'network.envelope_shared': True}),
    ('psiformer', TINY_PSIFORMER),
    ('psiformer_diagonal_no_norm_raw_inputs', {
        **TINY_PSIFORMER, 'network.envelope_type': 'diagonal', 'network.jastrow': 'none',
        'network.psiformer.use_layer_norm': False, 'network.psiformer.rescale_inputs': False}),
]
