"""Outputs: statistics CSV (append-safe) and timed progress lines with rate and ETA."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

import numpy as np
from absl import logging

from vmc import clock

# The statistics file of each mode of a run: one row per iteration.
STATS_FILES = {'training': 'train_stats.csv', 'evaluation': 'eval_stats.csv'}
TRAIN_COLUMNS = ('step', 'energy', 'ewmean', 'ewvar', 'pmove', 'variance', 'move_width',
                 'learning_rate', 'rejected', 'wall_time')


def state_columns(states: int) -> tuple[str, ...]:
  """The columns of K excited states (after TRAIN_COLUMNS, whose energy is then the trace,
  the sum of the K energies): energy_i, the eigenvalues of the iteration's mean energy
  matrix (for the eye: the run's estimates come from the mean over iterations), and
  E_i_j, the matrix itself (vmc.states.analyse)."""
  return (tuple(f'energy_{i}' for i in range(states))
          + tuple(f'E_{i}_{j}' for i in range(states) for j in range(states)))


def energy_matrices(stats: dict, states: int) -> np.ndarray:
  """(T, K, K) from the E_i_j columns of a statistics table."""
  return np.stack([np.stack([np.asarray(stats[f'E_{i}_{j}']) for j in range(states)], -1)
                   for i in range(states)], -2)


def states_of(columns: Iterable[str]) -> int:
  """K of a statistics file's columns (0: a ground-state run)."""
  return sum(1 for c in columns if c.startswith('energy_') and c[7:].isdigit())


def write_atomically(path: str, write: Callable[[str], None]) -> None:
  """write(tmp) fills `path`.tmp, which is flushed to the disk and renamed to `path`: a
  file is whole or untouched, and a failed write (e.g. a full disk) removes its
  temporary file before the error goes on."""
  tmp = path + '.tmp'
  try:
    write(tmp)
    with open(tmp, 'rb+') as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if isinstance(e, OSError) and e.filename is None:
      e.filename = tmp  # a write through a file object does not name its file
    raise


def write_text_atomically(path: str, text: str) -> None:
  """`text` into `path` through write_atomically."""
  def write(tmp: str) -> None:
    with open(tmp, 'w') as f:
      f.write(text)
  write_atomically(path, write)


def cannot_write(path: str) -> str | None:
  """Why a file cannot be written at `path` (its folder missing or read-only, a folder in
  its place), or None: asked before the work whose result it will hold."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    return 'is a folder'
  if os.path.exists(folder) and not os.path.isdir(folder):
    return f'{folder} is a file, not a folder'
  if not os.path.isdir(folder):
    return f'its folder {folder} does not exist'
  if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path)
                                                   and not os.access(path, os.W_OK)):
    return f'{folder} is not writable'
  return None


def attempt(write: Callable[..., None], *args: Any) -> OSError | None:
  """The OSError of write(*args), if any: returned, so that a caller can first tell the
  other processes of a multi-process run (vmc.parallel.any_process), then raise it on all."""
  try:
    write(*args)
  except OSError as e:
    return e
  return None


def truncate_csv(path: str, step: int) -> dict[str, list[float]]:
  """Keeps the rows with step < `step` (rewritten atomically); returns them by column.

  On resume from a checkpoint at `step`, later rows would be written again: this keeps
  the statistics free of gaps and repeats without losing any row before the checkpoint.
  """
  if not os.path.exists(path):
    return {}
  with open(path, newline='') as f:
    text = f.read()
  rows = list(csv.reader(text.replace('\0', '').splitlines()))
  if not rows:
    return {}
  header, body = rows[0], rows[1:]
  kept = []
  for r in body:  # up to the checkpoint's step, and to a damaged row (a write cut short)
    if len(r) != len(header) or not r[0].isdigit() or int(r[0]) >= step:
      break
    kept.append(r)
  if len(kept) != len(body):
    def write(tmp: str) -> None:
      with open(tmp, 'w', newline='') as f:
        csv.writer(f).writerows([header] + kept)
    write_atomically(path, write)
  return {name: [float(r[i]) for r in kept] for i, name in enumerate(header)}


def check_columns(path: str, columns: Sequence[str]) -> None:
  """Raises ConfigError if the CSV at `path` has other columns (resumed with other options)."""
  if not os.path.exists(path):
    return
  with open(path, newline='') as f:
    header = next(csv.reader(f), None)
  if header and tuple(header) != tuple(columns):
    from vmc.errors import ConfigError  # noqa: PLC0415
    raise ConfigError(
        f'{path} has the columns {",".join(header)}, this run writes {",".join(columns)}: '
        'it was started with other observables; resume with the same observables.* '
        'settings, or use a new log.save_path')


class CsvWriter:
  """Appends rows to a CSV file; writes the header only when the file is new or empty.

  Rows reach the OS at once and the disk every `flush_seconds`, so even a machine crash
  loses at most that much. With enabled=False (processes other than 0 of a multi-process
  run) nothing is opened or written.
  """

  def __init__(self, path: str, columns: Sequence[str], flush_seconds: float = 10.0,
               enabled: bool = True) -> None:
    self.path = path
    self.columns = tuple(columns)
    self.enabled = enabled
    if not enabled:
      return
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    self._file = open(path, 'a', newline='')
    self._writer = csv.writer(self._file)
    if new:
      self._writer.writerow(self.columns)
      self._file.flush()
    self._flush_seconds = flush_seconds
    self._last_flush = time.monotonic()

  def write(self, row: dict) -> None:
    if not self.enabled:
      return
    self._writer.writerow([_format(row[c]) for c in self.columns])
    self._file.flush()  # to the OS at every row; to the disk (fsync) every flush_seconds
    now = time.monotonic()
    if now - self._last_flush > self._flush_seconds:
      self.flush()
      self._last_flush = now

  def flush(self) -> None:
    if not self.enabled:
      return
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    if self.enabled and not self._file.closed:
      self.flush()
      self._file.close()

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()


def _format(value: object) -> str:
  if isinstance(value, float):
    return repr(value)
  return str(value)


class TrainingRows:
  """Rows of train_stats.csv/eval_stats.csv from each iteration's statistics (host
  floats), with FermiNet's ewmean/ewvar and a wall time that continues a resumed run's."""

  def __init__(self, alpha: float, previous: dict[str, list[float]], states: int = 0) -> None:
    self.states = states
    self.moments = ExponentialMoments(alpha)
    self.energies = list(previous.get('energy', []))
    for e in self.energies:
      self.moments.update(e)
    walls = previous.get('wall_time', [])
    self.time_offset = float(walls[-1]) if len(walls) else 0.0
    self.t_start = clock.now()

  def wall_time(self) -> float:
    """Seconds of this phase so far, a resumed run's earlier sessions included."""
    return self.time_offset + clock.now() - self.t_start

  def row(self, t: int, s: dict[str, Any]) -> dict:
    """s: the iteration's StepStats as host arrays (energy, variance, pmove, width,
    learning_rate, rejected, energy_matrix)."""
    energy = float(s['energy'])
    self.energies.append(energy)
    ewmean, ewvar = self.moments.update(energy)
    row = dict(step=t, energy=energy, ewmean=ewmean, ewvar=ewvar, pmove=float(s['pmove']),
               variance=float(s['variance']), move_width=float(s['width']),
               learning_rate=float(s['learning_rate']), rejected=int(s['rejected']),
               wall_time=self.wall_time())
    if self.states:
      matrix = np.asarray(s['energy_matrix'], np.float64)
      with np.errstate(all='ignore'):
        values = (np.sort(np.linalg.eigvals(matrix).real) if np.all(np.isfinite(matrix))
                  else np.full(self.states, np.nan))
      row.update({f'energy_{i}': float(v) for i, v in enumerate(values)})
      row.update({f'E_{i}_{j}': float(matrix[i, j]) for i in range(self.states)
                  for j in range(self.states)})
    return row


def progress_text(row: dict) -> str:
  """The progress line of a training or evaluation row (with K states: their energies
  this iteration, and the trace's)."""
  states = [row[f'energy_{i}'] for i in range(states_of(row))]
  head = ('E_i=[' + ', '.join(f'{e:.5f}' for e in states) + '] Ha  trace ') if states else 'E='
  return (f'{head}{row["energy"]:.6f} Ha  ewmean={row["ewmean"]:.6f}  '
          f'var={row["variance"]:.4f}  pmove={row["pmove"]:.2f}  width={row["move_width"]:.3f}')


class ExponentialMoments:
  """Exponentially weighted mean and variance of a series (FermiNet's ewmean/ewvar)."""

  def __init__(self, alpha: float) -> None:
    self.alpha = alpha
    self.mean: float | None = None
    self.var = 0.0

  def update(self, x: float) -> tuple[float, float]:
    if not math.isfinite(x):
      return (self.mean if self.mean is not None else x), self.var
    if self.mean is None:
      self.mean = x
    else:
      delta = x - self.mean
      self.mean += self.alpha * delta
      self.var = (1 - self.alpha) * (self.var + self.alpha * delta * delta)
    return self.mean, self.var


class Progress:
  """Logs a progress line at most every `every_seconds`, with s/iteration and ETA.

  The rate is timed from the end of the first step, so compilation does not count. With
  `seconds_left` (a wall-clock budget), the ETA is the sooner of the two ends.
  """

  def __init__(self, total: int, every_seconds: float, label: str = 'step',
               seconds_left: Callable[[], float] | None = None) -> None:
    self.total = total
    self.seconds_left = seconds_left
    self.every = every_seconds
    self.label = label
    self._t_start: float | None = None
    self._start_step = 0
    self._last_print = -math.inf

  def update(self, step: int, summary: str) -> None:
    """step: 0-based index of the step just done; summary: its statistics as text."""
    now = time.monotonic()
    if self._t_start is None:
      self._t_start, self._start_step = now, step
    done = step - self._start_step
    if now - self._last_print < self.every and step + 1 != self.total:
      return
    self._last_print = now
    rate = (now - self._t_start) / done if done > 0 else float('nan')
    eta = rate * (self.total - step - 1) if done > 0 else float('nan')
    if self.seconds_left is not None:
      eta = min(eta, max(0.0, self.seconds_left())) if done > 0 else float('nan')
    logging.info('%s %d/%d  %s  %.3f s/it  ETA %s', self.label, step + 1, self.total,
                 summary, rate, format_seconds(eta))


def format_seconds(s: float) -> str:
  if not math.isfinite(s):
    return '?'
  s = int(round(s))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f'{h}h{m:02d}m{sec:02d}s' if h else f'{m}m{sec:02d}s'
