"""Atoms and molecules with ccECP pseudopotentials on a CPU: Na by default.

  vmc --config configs/ecp.py --config.system.atom=Mg
  vmc --config configs/ecp.py --config.system.molecule=<list> --config.system.pp.symbols=Na,Cl

system.use_pp=True puts PySCF's ccECP on every atom beyond He (or on system.pp.symbols);
pretraining uses the ccECP-cc-pVDZ basis on those atoms (system.pp.basis). A smaller network
and batch than production (3 x (64, 16), 8 determinants, 256 walkers); the numbers of
docs/pseudopotentials.md were made with it.
"""

from vmc import config


def get_config():
  cfg = config.default()
  cfg.system.atom = 'Na'
  cfg.system.use_pp = True
  cfg.batch_size = 256
  cfg.network.determinants = 8
  cfg.network.ferminet.hidden_dims = ((64, 16), (64, 16), (64, 16))
  cfg.optim.iterations = 3000
  cfg.pretrain.iterations = 500
  cfg.log.print_every_seconds = 30.0
  return cfg
