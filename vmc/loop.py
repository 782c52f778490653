"""The loop of every phase of a run (pretraining, burn-in, training, evaluation): a step
repeated, with hooks that see each iteration's row and take the same decisions on every
process.

  for t in range(first, last):
    state, row = step(state, t)
    hook.after(t, state, row)                 each hook, on its own process: write a row,
                                              print progress, count bad steps (may raise)
    votes = any_process(signal, hook.ends(), hook.votes())    one collective for all
    hook.decide(t, state, votes, stopping)    the same on every process: raise a failed
                                              write, save a checkpoint that is due
    stop after this iteration if a signal came to any process; end the phase (complete)
    if a hook ends it on any process (a wall-clock budget: vmc.budget)

A signal (SIGTERM, SIGINT) is recorded by `Signals` and ends the loop after the iteration
in progress; a second Ctrl-C stops at once. The caller decides what a stop means for its
phase (checkpoint and exit, or redo the phase next time).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from absl import logging

from vmc import parallel, writers
from vmc.errors import RunAborted

State = TypeVar('State')


class Signals:
  """Records SIGTERM/SIGINT so that a run can finish its current piece of work."""

  def __init__(self) -> None:
    self.signum: int | None = None
    self._previous: dict = {}

  def __enter__(self) -> Signals:
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum: int, frame: object) -> None:
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    self.signum = signum
    logging.warning('received %s: finishing the current step, then stopping',
                    signal.Signals(signum).name)

  def any_process(self) -> bool:
    """True on every process once any process got a signal (a collective)."""
    return bool(parallel.any_process([self.signum is not None])[0])

  def cause(self) -> str:
    return (signal.Signals(self.signum).name if self.signum is not None
            else 'a signal to another process')

  def __exit__(self, *exc: object) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class Hook:
  """Work after each iteration; every method does nothing unless overridden."""

  def after(self, t: int, state: Any, row: dict) -> None:
    """On this process, with the iteration's row (which it may extend for later hooks)."""

  def votes(self) -> tuple[bool, ...]:
    """This process's flags; each becomes True on all processes if True on any."""
    return ()

  def ends(self) -> bool:
    """Whether this process would end the phase after this iteration (voted like votes):
    the phase is then complete, not stopped."""
    return False

  def decide(self, t: int, state: Any, votes: tuple[bool, ...], stopping: bool) -> None:
    """On every process alike, with the flags of `votes` gathered over processes."""


def iterate(step: Callable[[State, int], tuple[State, dict]], state: State, first: int,
            last: int, hooks: Sequence[Hook], signals: Signals) -> tuple[State, int, bool]:
  """Iterations first..last-1 with the hooks. Returns (state, the next iteration, whether
  a signal stopped the loop before its last iteration). A hook that ends the phase makes
  it complete at that iteration (the third value False)."""
  for t in range(first, last):
    state, row = step(state, t)
    for hook in hooks:
      hook.after(t, state, row)
    own = [hook.votes() for hook in hooks]
    stopping, ending, *votes = parallel.any_process(
        [signals.signum is not None, any(hook.ends() for hook in hooks),
         *(v for vs in own for v in vs)])
    ending = bool(ending) and t + 1 < last
    stopping = bool(stopping) and t + 1 < last and not ending
    for hook, vs in zip(hooks, own, strict=True):
      hook.decide(t, state, tuple(bool(v) for v in votes[:len(vs)]), stopping or ending)
      votes = votes[len(vs):]
    if stopping or ending:
      return state, t + 1, stopping
  return state, last, False


class StatsFile(Hook):
  """Appends each row to a CSV file (process 0); a failed write, e.g. a full disk, is raised
  on every process after the iteration."""

  def __init__(self, csv: writers.CsvWriter, path: str) -> None:
    self.csv, self.path = csv, path
    self.failed: OSError | None = None

  def after(self, t: int, state: Any, row: dict) -> None:
    self.failed = writers.attempt(self.csv.write, row)

  def votes(self) -> tuple[bool, ...]:
    return (self.failed is not None,)

  def decide(self, t: int, state: Any, votes: tuple[bool, ...], stopping: bool) -> None:
    if votes[0]:
      raise self.failed or OSError(None, 'process 0 could not write', self.path)


class Progress(Hook):
  """A progress line with `text(row)` every few seconds (writers.Progress)."""

  def __init__(self, total: int, every_seconds: float, text: Callable[[dict], str],
               label: str = 'step', seconds_left: Callable[[], float] | None = None) -> None:
    self.progress = writers.Progress(total, every_seconds, label=label,
                                     seconds_left=seconds_left)
    self.text = text

  def after(self, t: int, state: Any, row: dict) -> None:
    self.progress.update(t, self.text(row))


class NanStreak(Hook):
  """Counts the iterations that the iteration's guard rejected (non-finite energy or
  parameters, rolled back: column `rejected`); `limit` in a row stop the run with
  `blame(accepted)`, which says what is at fault and what to do."""

  def __init__(self, limit: int, blame: Callable[[int], str]) -> None:
    self.limit, self.blame = limit, blame
    self.in_a_row = self.accepted = 0

  def after(self, t: int, state: Any, row: dict) -> None:
    # The same on every process: the statistics are all-reduced.
    self.in_a_row = self.in_a_row + 1 if row['rejected'] else 0
    self.accepted += not row['rejected']
    if self.in_a_row:
      logging.warning('step %d rejected: non-finite energy or parameters (%d in a row); '
                      'parameters and walkers kept from the step before', t, self.in_a_row)
      if self.in_a_row >= self.limit:
        raise RunAborted(f'{self.in_a_row} non-finite steps in a row at step {t}; stopped. '
                         + ('' if self.accepted else 'No step of this run was accepted: ')
                         + self.blame(self.accepted))


class Checkpoints(Hook):
  """A checkpoint every `minutes` (by process 0's clock: voted), after an accepted step and
  not at the last one (the caller saves the end); `save(state)` is a collective."""

  def __init__(self, minutes: float, last: int, save: Callable[[Any], Any],
               streak: NanStreak, before: Callable[[], None] = lambda: None) -> None:
    self.seconds, self.last, self.save, self.streak, self.before = (
        minutes * 60.0, last, save, streak, before)
    self.saved_at = time.monotonic()

  def votes(self) -> tuple[bool, ...]:
    return (time.monotonic() - self.saved_at > self.seconds,)

  def decide(self, t: int, state: Any, votes: tuple[bool, ...], stopping: bool) -> None:
    if votes[0] and not stopping and t + 1 < self.last and not self.streak.in_a_row:
      self.before()
      self.save(state)
      self.saved_at = time.monotonic()
