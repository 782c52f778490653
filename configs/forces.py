"""Energies and forces of small molecules on a CPU: H2 by default.

  vmc --config configs/forces.py --config.system.molecule=LiH
  python scripts/scan.py --config configs/forces.py --bond_lengths 1.0,1.2,1.4 --out DIR
  python scripts/relax.py --config configs/forces.py --bond_length 1.2 --out DIR

A smaller network and batch than production (3 x (64, 16), 8 determinants, 256 walkers).
Scans and relaxations evaluate the forces of each geometry themselves; for a single run,
add --config.observables.forces=true (to an evaluation, optim.optimizer=none, of a trained
run). The numbers of docs/forces.md were made with it.
"""

from vmc import config


def get_config():
  cfg = config.default()
  cfg.system.molecule = 'H2'
  cfg.batch_size = 256
  cfg.network.determinants = 8
  cfg.network.ferminet.hidden_dims = ((64, 16), (64, 16), (64, 16))
  cfg.optim.iterations = 3000
  cfg.pretrain.iterations = 500
  cfg.log.print_every_seconds = 30.0
  return cfg
