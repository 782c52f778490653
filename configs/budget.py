"""The best energy within a wall-clock budget on a workstation:
`vmc --config configs/budget.py --config.system.atom=C --config.budget_minutes=60`.

Training stops at 85% of budget_minutes (SCF, pretraining and burn-in included), then the
trained wavefunction is evaluated (optimizer none) for the rest; the estimate, with a
reblocked error bar, is <save_path>/evaluation/summary.json (vmc/budget.py).
The settings: SPRING, the optimizer that measured best at equal CPU time on Li and C, on a
mid-sized FermiNet (three (64, 16) layers, 8 dense determinants), 256 walkers, and
FermiNet's learning-rate schedule rate / (1 + t / delay) annealed over the budget: delay is
0.3 of the training iterations the budget allows, timed on the first iterations
(optim.lr.delay_fraction; at a fixed delay of 10^4 a short budget ends with a learning rate
so large that the last parameters, the ones evaluated, are noisy). docs/accuracy.md has
the errors they reach per budget and which other settings were tried. For a molecule clear the atom:
--config.system.atom= --config.system.molecule=Li2.
"""

from vmc import config


def get_config():
  cfg = config.default()
  cfg.system.atom = 'C'
  cfg.budget_minutes = 30.0
  cfg.budget_evaluation = 0.15
  cfg.optim.optimizer = 'spring'
  cfg.optim.iterations = 10_000_000  # the budget ends training
  cfg.optim.lr.delay_fraction = 0.3
  cfg.batch_size = 256
  cfg.network.determinants = 8
  cfg.network.ferminet.hidden_dims = ((64, 16), (64, 16), (64, 16))
  cfg.pretrain.iterations = 200
  cfg.log.print_every_seconds = 30.0
  return cfg
