"""Geometry relaxation on VMC forces (quasi-Newton with a trust radius; vmc.geometry).

  python scripts/relax.py --config configs/molecule.py --config.system.molecule=H2 \
      --bond_length 1.2 --out checkpoints/h2_relax

Each step trains the wavefunction at the current geometry (the first from the config's
pretraining and optim.iterations, later ones warm-started from the step before for
--warm_iterations; --warm_from starts the first step from an existing run), evaluates
energy and forces for --eval_iterations, and moves the
nuclei; it stops when every force is zero within --sigmas error bars and the next step
would move no atom more than --step_tolerance, or after --max_steps. <out>/relax.json and
relax.extxyz hold the trajectory (vmc.scans); the same
command continues an interrupted relaxation.
"""

from __future__ import annotations

import math
import os
import sys

from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vmc import cli, config as config_lib, geometry, runtime, scans  # noqa: E402
from vmc.errors import ConfigError  # noqa: E402

_OUT = flags.DEFINE_string('out', '', 'folder of the relaxation (required; rerun to continue)')
_BOND = flags.DEFINE_float('bond_length', None, 'start a diatomic at this bond length (bohr)')
_FROM = flags.DEFINE_string('warm_from', '', 'a training run folder (any geometry of the same '
                            'molecule) to warm-start the first step from; default: a cold start')
_WARM = flags.DEFINE_integer('warm_iterations', 500, 'training iterations per step after the '
                             'first')
_EVAL = flags.DEFINE_integer('eval_iterations', 1000, 'evaluation iterations per step')
_STEPS = flags.DEFINE_integer('max_steps', 15, 'geometry steps at most')
_TRUST = flags.DEFINE_float('trust_radius', 0.2, 'largest move of an atom per step (bohr)')
_HESSIAN = flags.DEFINE_float('hessian_guess', 0.5, 'initial Hessian model, hartree/bohr^2 '
                              'times the identity')
_SIGMAS = flags.DEFINE_float('sigmas', 2.0, 'converged when every force is below this many '
                             'error bars')
_STEP_TOL = flags.DEFINE_float('step_tolerance', 0.01, '... and the next step moves no atom '
                               'further than this (bohr)')


def options() -> geometry.RelaxOptions:
  """The relaxation's flags, each checked (one line naming the flag)."""
  positive = {'trust_radius': _TRUST.value, 'hessian_guess': _HESSIAN.value,
              'sigmas': _SIGMAS.value}
  for name, value in positive.items():
    if not (math.isfinite(value) and value > 0):
      raise ConfigError(f'--{name}={value}: must be a finite number larger than 0')
  if not (math.isfinite(_STEP_TOL.value) and _STEP_TOL.value >= 0):
    raise ConfigError(f'--step_tolerance={_STEP_TOL.value}: must be a finite number, 0 or '
                      'more (bohr)')
  if _STEPS.value < 1:
    raise ConfigError(f'--max_steps={_STEPS.value}: must be 1 or more')
  return geometry.RelaxOptions(hessian_guess=_HESSIAN.value, trust_radius=_TRUST.value,
                               sigmas=_SIGMAS.value, step_tolerance=_STEP_TOL.value)


def job(cfg) -> None:
  scans.check_out(_OUT.value)
  plan = scans.PointPlan(warm_iterations=_WARM.value, eval_iterations=_EVAL.value)
  scans.check_plan(plan, relaxation=True)
  opts = options()
  if _FROM.value:
    scans.check_warm_from(_FROM.value)
  system = config_lib.resolve_system(cfg)
  start = [(a.symbol, a.coords) for a in system.atoms]
  if _BOND.value is not None:
    if len(start) != 2:
      raise ConfigError('--bond_length needs a diatomic molecule in the config')
    if not (math.isfinite(_BOND.value) and _BOND.value > 0.1):
      raise ConfigError(f'--bond_length={_BOND.value}: must be a finite number of bohr '
                        'larger than 0.1')
    start = geometry.diatomic((start[0][0], start[1][0]), _BOND.value)
  scans.check_geometries(cfg, [start], plan)
  record = scans.relax(cfg, start, _OUT.value, plan, opts, max_steps=_STEPS.value,
                       warm_from=_FROM.value or None)
  if record is not None:
    last = record['points'][-1]
    logging.info('last geometry (bohr): %s; the model\'s minimum: %s; converged: %s',
                 last['positions'], record['next_positions'], record['converged'])


if __name__ == '__main__':
  runtime.reexec_with_huge_pages()  # as the vmc command does (vmc/runtime.py)
  cli.main(job)
