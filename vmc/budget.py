"""A wall-clock budget for a run (budget_minutes > 0): train, then evaluate, within it.

  preparation   SCF, pretraining, burn-in: from the start of the run to its first training
                iteration; recorded in budget.json of the run folder, so that a resumed
                run counts it again
  training      the loop ends once the statistics' wall_time reaches
                (1 - budget_evaluation) * budget - preparation (or at optim.iterations)
  learning rate with optim.lr.delay_fraction: the training's first CALIBRATION_ITERATIONS
                measure its seconds per iteration (kept in budget.json), from which
                the iterations of the training's share follow; the schedule's delay is
                that fraction of them (the step is compiled again once), so that the
                learning rate anneals over the budget whatever the machine
  evaluation    <save_path>/evaluation, an evaluation run (optimizer none, FermiNet's
                inference mode) restored from the training's last checkpoint, whose
                budget is what is left: budget - preparation - the training's wall_time.
                Its own loop ends when its wall_time reaches that less its own preparation
                (restore, burn-in), and its summary.json holds the run's estimate
                (reblocked). An evaluation of an earlier checkpoint (the budget was raised
                and training went on) is set aside as evaluation_<its checkpoint>. The
                run holds the training folder's lock while it evaluates (vmc.train), so
                no second run on the folder can rename or reuse a live evaluation. A
                training that the budget ended after fewer than MIN_TRAINING_ITERATIONS
                is not evaluated: the run stops in one line (raise the budget).

The shares follow from files in the run folders (budget.json, the statistics' wall_time),
not from the clock of one session, so that the same command after a preemption resumes
the same phase with the same remaining budget. Time between sessions does not count, nor
does the preparation of a session stopped before training began (it is redone).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from absl import logging

from vmc import analysis, checkpoint, config as config_lib, loop, parallel, spec as spec_lib
from vmc import writers
from vmc.config import Spec
from vmc.errors import ConfigError, RunAborted

FILE = 'budget.json'
EVALUATION_FOLDER = 'evaluation'
MIN_EVALUATION_SECONDS = 10.0  # less than this left: no evaluation (said in the log)
MIN_TRAINING_ITERATIONS = 100  # a budget that ends training sooner is refused an evaluation
CALIBRATION_ITERATIONS = 30  # the first iteration, with its compilation, is not timed


def share(spec: Spec) -> float:
  """Seconds of the budget for this run's phase: all of it for an evaluation."""
  fraction = 1.0 if spec.evaluation else 1.0 - spec.budget_evaluation
  return 60.0 * spec.budget_minutes * fraction


# What budget.json may hold: key -> (lowest allowed, whether the lowest itself is allowed).
_FIELDS = {'budget_minutes': (0.0, False), 'preparation_seconds': (0.0, True),
           'seconds_per_iteration': (0.0, False)}


def _load(save_path: str) -> dict[str, float]:
  """budget.json's values ({} before the run measured any). A file that this module did
  not write so (not a JSON object, a value missing its meaning: NaN, negative, a zero
  rate) is refused in one line rather than replaced: it decides the phases' shares."""
  path = os.path.join(save_path, FILE)
  try:
    with open(path) as f:
      text = f.read()
  except FileNotFoundError:
    return {}
  try:
    data = json.loads(text)
  except ValueError:
    data = None
  problem = 'is not a JSON object' if not isinstance(data, dict) else next(
      (f'has {name}={data[name]!r}' for name, (low, closed) in _FIELDS.items()
       if name in data and not _valid(data[name], low, closed)), None)
  if problem:
    raise ConfigError(f'{path} {problem}, not what a budgeted run writes (the preparation '
                      'time and iteration rate it measured); restore it, or delete it and '
                      'the next run measures them again')
  return data


def _valid(value: object, low: float, closed: bool) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (value >= low if closed else value > low))


def _read(save_path: str, name: str) -> float | None:
  value = _load(save_path).get(name)
  return None if value is None else float(value)


def _recorded(save_path: str) -> float | None:
  return _read(save_path, 'preparation_seconds')


def _record(save_path: str, **values: float) -> None:
  """Adds `values` to budget.json (process 0)."""
  data = _load(save_path)
  data.update(values)
  writers.write_text_atomically(os.path.join(save_path, FILE),
                                json.dumps(data, indent=2) + '\n')


def check(spec: Spec, save_path: str) -> None:
  """Refuses a budget.json that cannot be read (see `_load`) before the run does anything,
  and says what the budget covers."""
  if not spec.budget_minutes:
    return
  parallel.on_main(lambda: _load(save_path))
  if not spec.evaluation:
    logging.info('budget: %g minutes; the training ends %.0f s after the start, the SCF, '
                 'pretraining and burn-in included (a run whose preparation takes longer '
                 'stops after it, keeping its state), the evaluation takes the rest',
                 spec.budget_minutes, share(spec))


def allowance(spec: Spec, save_path: str, seconds_so_far: float) -> float:
  """The wall_time (statistics column) at which this run's loop ends. The preparation is
  budget.json's if an earlier session recorded it, else `seconds_so_far` (this session's,
  recorded now by process 0)."""
  def prepared() -> float:
    seconds = _recorded(save_path)
    if seconds is None:
      seconds = seconds_so_far
      _record(save_path, budget_minutes=spec.budget_minutes, preparation_seconds=seconds)
    return seconds
  return share(spec) - parallel.on_main(prepared)


class Deadline(loop.Hook):
  """Ends the phase (complete) at the first iteration whose wall_time reaches `limit`."""

  def __init__(self, limit: float) -> None:
    self.limit = limit
    self.reached = False

  def after(self, t: int, state: Any, row: dict) -> None:
    # Process 0's clock alone, the one its statistics file records: a rerun then finds
    # the phase complete from that file.
    self.reached = parallel.is_main() and row['wall_time'] >= self.limit

  def ends(self) -> bool:
    return self.reached


def calibrating(spec: Spec, save_path: str) -> bool:
  """Whether this training must first measure its iteration rate (delay_fraction set,
  none recorded yet)."""
  if not spec.budget_minutes or spec.evaluation or not spec.optim.lr.delay_fraction:
    return False
  return parallel.on_main(lambda: _read(save_path, 'seconds_per_iteration')) is None


def calibrated(spec: Spec, save_path: str, seconds_per_iteration: float | None = None,
               ) -> Spec:
  """The spec with optim.lr.delay = delay_fraction x the iterations of the training's
  share, at `seconds_per_iteration` (then recorded in budget.json) or at the rate
  recorded there; `spec` itself when delay_fraction is 0 or no rate is known yet. The
  iterations follow from the budget at hand: a raised budget stretches the schedule."""
  fraction = spec.optim.lr.delay_fraction
  if not spec.budget_minutes or spec.evaluation or not fraction:
    return spec

  def read() -> tuple[float | None, float | None]:
    if seconds_per_iteration is not None:
      _record(save_path, seconds_per_iteration=seconds_per_iteration)
    return _read(save_path, 'seconds_per_iteration'), _recorded(save_path)
  rate, preparation = parallel.on_main(read)
  if rate is None or preparation is None:
    return spec
  iterations = max(share(spec) - preparation, 0.0) / rate
  delay = float(max(1, round(min(fraction * iterations, spec_lib.MAX_INT))))
  logging.info('budget: %.3f s per training iteration (measured), so about %.0f training '
               'iterations; learning-rate delay %.0f (%g of them)', rate, iterations, delay,
               fraction)
  if seconds_per_iteration is not None:  # config.json says the delay the run uses
    parallel.on_main(lambda: _set_delay(os.path.join(save_path, 'config.json'), delay))
  return config_lib.resolve_variant(config_lib.from_json(spec.config_json),
                                    {'optim.lr.delay': delay})


def _set_delay(path: str, delay: float) -> None:
  with open(path) as f:
    config = json.load(f)
  config['optim']['lr']['delay'] = delay
  writers.write_text_atomically(path, json.dumps(config, indent=2) + '\n')


class Rate(loop.Hook):
  """Seconds per iteration from the rows' wall_time, the first row (its compilation)
  excluded: the mean over the others, None before two."""

  def __init__(self) -> None:
    self.walls: list[float] = []

  def after(self, t: int, state: Any, row: dict) -> None:
    self.walls.append(row['wall_time'])

  def seconds_per_iteration(self) -> float | None:
    if len(self.walls) < 3:
      return None
    return (self.walls[-1] - self.walls[0]) / (len(self.walls) - 1)


def check_training(spec: Spec, iterations: int, step: int) -> None:
  """Refuses to evaluate a training that its share of the budget ended after fewer than
  MIN_TRAINING_ITERATIONS iterations (the preparation and the first compilations took
  nearly all of it): its estimate would be of a barely trained wavefunction. A training
  that reached optim.iterations is what was asked for, however short."""
  if (not spec.budget_minutes or spec.evaluation or step >= spec.optim.iterations
      or iterations >= MIN_TRAINING_ITERATIONS):
    return
  raise RunAborted(f'budget: the training ended after {iterations} iteration(s), when its '
                   f'share of budget_minutes={spec.budget_minutes:g} ({share(spec):.0f} s, '
                   'the SCF, pretraining, burn-in and compilation included) was spent; an '
                   'evaluation of so short a training would not estimate the energy, so '
                   'none was run. Raise budget_minutes (the same command then trains on '
                   'and evaluates)')


def evaluation_spec(spec: Spec, save_path: str) -> Spec | None:
  """The evaluation that follows a finished budgeted training in `save_path`, or None when
  there is none to run (no budget, an evaluation itself, or under
  MIN_EVALUATION_SECONDS left)."""
  if not spec.budget_minutes or spec.evaluation:
    return None

  folder = os.path.join(save_path, EVALUATION_FOLDER)

  def used() -> tuple[float, str]:
    try:
      walls = analysis.read_stats(save_path).get('wall_time')
    except FileNotFoundError:
      walls = None
    trained = float(walls[-1]) if walls is not None and len(walls) else 0.0
    last = checkpoint.list_checkpoints(save_path)[-1][1]
    _set_aside_if_stale(folder, last)
    return (_recorded(save_path) or 0.0) + trained, last
  spent, last = parallel.on_main(used)
  left = 60.0 * spec.budget_minutes - spent
  if left < MIN_EVALUATION_SECONDS:
    logging.warning('budget: %.0f s left after training; no evaluation phase (raise '
                    'budget_evaluation or budget_minutes)', left)
    return None
  return config_lib.resolve_variant(config_lib.from_json(spec.config_json), {
      'optim.optimizer': 'none',
      'optim.iterations': spec_lib.MAX_INT,  # the budget ends it
      'log.restore_path': last,
      'log.save_path': folder,
      'budget_minutes': left / 60.0,
  })


def _set_aside_if_stale(folder: str, checkpoint_path: str) -> None:
  """An evaluation folder of another training checkpoint is renamed, not reused."""
  try:
    with open(os.path.join(folder, 'config.json')) as f:
      evaluated = json.load(f)['log']['restore_path']
  except (OSError, ValueError, KeyError, TypeError):
    return
  if os.path.abspath(evaluated) != os.path.abspath(checkpoint_path):
    name = os.path.basename(evaluated).removesuffix('.npz')
    os.rename(folder, f'{folder}_{name}')
    logging.warning('budget: %s evaluated %s, not the last checkpoint %s; set aside as %s',
                    folder, evaluated, checkpoint_path, f'{folder}_{name}')
