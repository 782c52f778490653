"""A run: build everything once from the spec, then iterate.

  model = build(spec)                       network, sampler, objective, optimizer
  state = resume, restore, or init          (+ SCF and pretraining, + burn-in)
  for t in range(step, optim.iterations):
    state, stats = model.iteration.step(state)     compiled: sample, update, NaN guard
    write stats, print progress, checkpoint on schedule, stop on a signal

The run holds its folder's lock (vmc.runfolder) throughout, and saves its work at the end
of every phase (SCF, pretraining, burn-in) and then on schedule, so that the same command
always continues. SIGTERM and SIGINT are honoured from the start: before anything is
written the run just stops; during the SCF, pretraining or burn-in it stops after the
current piece of work and says what the next run will redo; during training it
checkpoints and stops. Everything that can fail on bad input (config, checkpoints, basis,
SCF) runs before anything is written; a file operation that fails later (a full disk)
ends the run with one line saying what is safe on disk. Process 0 alone reads and writes
files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator

import jax
import numpy as np
from absl import logging

from vmc import analysis, checkpoint, iteration, networks, observables, parallel, pretrain
from vmc import provenance, runfolder, runtime, start as start_lib, writers
from vmc.config import Spec
from vmc.errors import RunAborted
from vmc.types import StepStats, TrainState

__all__ = ['RunAborted', 'RunResult', 'run']

BURN_IN_CHUNK = 10  # burn-in iterations per compiled call: a signal waits at most this long


@dataclasses.dataclass
class RunResult:
  save_path: str
  steps: int  # iterations done
  energies: np.ndarray  # (steps,) mean local energy per iteration
  final_state: TrainState | None  # None when stopped before training started


class _SignalFlag:
  """Records SIGTERM/SIGINT so that the run can finish its current piece of work."""

  def __init__(self) -> None:
    self.signum: int | None = None
    self._previous: dict = {}

  def __enter__(self) -> _SignalFlag:
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


def _write_run_folder(spec: Spec, save_path: str, start: start_lib.Start, seed: int) -> None:
  """config.json, with the seed used (and the SCF cache): the first files a run writes."""
  if not parallel.is_main():
    return
  config = json.loads(spec.config_json)
  config['debug']['seed'] = seed
  writers.write_text_atomically(os.path.join(save_path, 'config.json'),
                                json.dumps(config, indent=2) + '\n')
  if start.hf is not None:
    pretrain.write_cache_file(start.hf, save_path)


def _prepare(spec: Spec, model: iteration.Model, start: start_lib.Start, save_path: str,
             signals: _SignalFlag) -> TrainState | None:
  """Pretraining (fresh runs), the optimizer state, and burn-in; None if a signal came.

  A checkpoint follows pretraining (marked as before its burn-in) and the burn-in (the
  state at the first training step), so that a rerun never repeats finished work.
  """
  state = start.state
  if start.hf is not None:
    t0 = time.time()
    pretrained = pretrain.run(state, model.network, start.hf, spec, save_path,
                              signals.any_process)
    if pretrained is None:
      logging.warning('stopped by %s during pretraining; nothing to resume from: the next '
                      'run redoes pretraining and burn-in (the SCF is kept in %s)',
                      signals.cause(), save_path)
      return None
    logging.info('pretraining: %d iterations in %.1f s', spec.pretrain.iterations,
                 time.time() - t0)
    state = iteration.with_opt_state(pretrained, model)
    _save(spec, save_path, state, burned_in=False)
  elif start.restored is None:
    state = iteration.with_opt_state(state, model)
  if spec.mcmc.burn_in > 0 and start.needs_burn_in:
    t0 = time.time()
    done = 0
    while done < spec.mcmc.burn_in:
      n = min(BURN_IN_CHUNK, spec.mcmc.burn_in - done)
      state = model.iteration.burn_in(state, n)
      done += n
      if done < spec.mcmc.burn_in and signals.any_process():
        logging.warning('stopped by %s during burn-in (%d of %d iterations); the next run '
                        'redoes the burn-in', signals.cause(), done, spec.mcmc.burn_in)
        return None
    jax.block_until_ready(state.mcmc.x)
    logging.info('burn-in: %d iterations of %d moves in %.1f s', spec.mcmc.burn_in,
                 spec.mcmc.steps, time.time() - t0)
  if not start.resumed or start.needs_burn_in:
    _save(spec, save_path, state)  # the state at the first training step
  return state


def run(spec: Spec) -> RunResult:
  """Runs (or resumes) a run; writes statistics and checkpoints into log.save_path.

  A save_path that holds checkpoints is resumed from its newest readable one; otherwise
  the run starts from log.restore_path if given, else from scratch (SCF, pretraining,
  burn-in). The run holds the folder's lock throughout. In a multi-process run every
  process calls this.
  """
  parallel.initialize(spec.distributed)
  runtime.configure()  # process settings, before anything is compiled (vmc/runtime.py)
  save_path = parallel.share(spec.log.save_path or start_lib.default_save_path(spec.system.name))
  system = spec.system
  logging.info('system %s: %d atoms, electrons (up, down) = %s, charge %d, 2S = %d, %s',
               system.name, len(system.atoms), system.electrons, system.charge, system.spin,
               system.hamiltonian)
  model = iteration.build(spec)
  obs = (observables.make(model.network, model.objective.local_energy, system,
                          spec.observables)
         if spec.observables.enabled else None)
  with _SignalFlag() as signals, _locked(save_path):
    try:
      return _run_in_folder(spec, model, obs, save_path, signals)
    except OSError as e:
      raise RunAborted(_write_failure(e, save_path)) from None


@contextlib.contextmanager
def _locked(save_path: str) -> Iterator[None]:
  """The run folder's lock (runfolder.RunFolderLock) on process 0, for every process."""
  lock = runfolder.RunFolderLock(save_path, enabled=parallel.is_main())
  parallel.on_main(lambda: lock.__enter__() and None)
  try:
    yield
  finally:
    lock.__exit__()


def _run_in_folder(spec: Spec, model: iteration.Model, obs: observables.Observables | None,
                   save_path: str, signals: _SignalFlag) -> RunResult:
  seed = parallel.on_main(lambda: start_lib.seed(spec.debug, save_path))
  start = start_lib.find(spec, model, seed, save_path, obs)
  if signals.any_process():
    kept = ''
    if start.hf is not None and parallel.is_main():
      pretrain.write_cache_file(start.hf, save_path)
      kept = f' but the SCF ({os.path.join(save_path, "hf_orbitals.npz")}, reused next time)'
    logging.warning('stopped by %s before the run started; nothing written%s',
                    signals.cause(), kept)
    return RunResult(save_path, int(parallel.first(start.state.step)), np.zeros(0), None)
  _write_run_folder(spec, save_path, start, seed)
  logging.info('seed %d (rerun with --config.debug.seed=%d); output in %s', seed, seed,
               save_path)
  n_params = networks.count_parameters(parallel.first(start.state.params))
  logging.info('network %s: %d parameters; optimizer %s', spec.network.network_type,
               n_params, spec.optim.optimizer)
  logging.info('parallelism: %s', parallel.describe(spec.batch_size))
  logging.info('local energy: %s', iteration.local_energy_chunk(spec)[1])
  logging.info(runtime.log_line())
  state = _prepare(spec, model, start, save_path, signals)
  if state is None:
    return RunResult(save_path, int(parallel.first(start.state.step)), np.zeros(0), None)
  return _loop(spec, model, state, save_path, start, obs, signals)


def _write_failure(error: OSError, save_path: str) -> str:
  """What failed to be written or read, and what is safe on disk."""
  what = f'{error.strerror or error} ({error.filename})' if error.filename else str(error)
  found = checkpoint.list_checkpoints(save_path) if os.path.isdir(save_path) else []
  safe = (f'the newest checkpoint, {found[-1][1]} (step {found[-1][0]}), is whole and the '
          'statistics before it are kept; free space (or fix the folder) and run the same '
          'command again to continue from it' if found else
          'no checkpoint was written yet: the next run starts this one again')
  return f'a file operation in {save_path} failed: {what}; {safe}'


class _Rows:
  """Turns each iteration's statistics into a CSV row (FermiNet's ewmean/ewvar too)."""

  def __init__(self, spec: Spec, previous: dict[str, list[float]]) -> None:
    self.moments = writers.ExponentialMoments(spec.log.stats_ewm_alpha)
    self.energies = list(previous.get('energy', []))
    for e in self.energies:
      self.moments.update(e)
    walls = previous.get('wall_time', [])
    self.time_offset = float(walls[-1]) if len(walls) else 0.0
    self.t_start = time.time()

  def row(self, t: int, stats: StepStats) -> dict:
    s = {k: float(v) for k, v in parallel.first(stats._asdict()).items()}
    self.energies.append(s['energy'])
    ewmean, ewvar = self.moments.update(s['energy'])
    return dict(step=t, energy=s['energy'], ewmean=ewmean, ewvar=ewvar, pmove=s['pmove'],
                variance=s['variance'], move_width=s['width'],
                learning_rate=s['learning_rate'], rejected=int(s['rejected']),
                wall_time=self.time_offset + time.time() - self.t_start)


def _progress_text(row: dict) -> str:
  return (f'E={row["energy"]:.6f} Ha  ewmean={row["ewmean"]:.6f}  var={row["variance"]:.4f}'
          f'  pmove={row["pmove"]:.2f}  width={row["move_width"]:.3f}')


def _blame(spec: Spec, accepted: int, start: start_lib.Start, save_path: str) -> str:
  """For a run stopped by non-finite steps: the phase at fault, its fix, and the newest
  checkpoint (the loop writes checkpoints only after accepted steps)."""
  found = parallel.on_main(lambda: checkpoint.list_checkpoints(save_path))
  where = (f'the newest checkpoint is {found[-1][1]} (step {found[-1][0]})' if found else
           'no checkpoint was written')
  if accepted:
    fix = 'lower optim.lr.rate' + (' or raise optim.kfac.damping'
                                   if spec.optim.optimizer == 'kfac' else '')
    return (f'The optimization diverged: {fix}; {where}, and the same command with the '
            'changed setting continues from it')
  if start.hf is not None:
    origin = ('the pretrained wavefunction (more pretrain.iterations, another debug.seed '
              "or pretrain.method='none' may help)")
  elif start.restored is not None:
    origin = f'the state restored from {start.restored.path} (restore another checkpoint)'
  else:
    origin = 'the fresh initialization (another debug.seed or a smaller network may help)'
  return (f'the fault is in {origin}; {where} and holds that state: start again with a new '
          'log.save_path')


def _warn_if_stats_lost(spec: Spec, previous: dict[str, list[float]], step: int,
                        start: start_lib.Start) -> None:
  """A resumed run whose statistics file lacks the rows before its checkpoint says so
  (a run started from log.restore_path has no rows before its first step)."""
  steps = previous.get('step', [])
  last = int(steps[-1]) if len(steps) else None
  if not start.resumed or step == 0 or (last is None and spec.log.restore_path):
    return
  if last != step - 1:
    logging.warning('%s holds %s, but the checkpoint is at step %d: the statistics of the '
                    'steps between are lost (the file was deleted or cut); new rows '
                    'continue at step %d', writers.STATS_FILES[spec.mode],
                    f'steps up to {last}' if last is not None else 'no rows', step, step)


def _open_stats(spec: Spec, save_path: str, step: int, start: start_lib.Start,
                obs: observables.Observables | None) -> tuple[observables.ArrayStore, _Rows]:
  """The statistics so far, cut back to the checkpoint's step (later rows would be
  written again); a summary.json of an earlier end is removed if the run goes on."""
  stats_path = os.path.join(save_path, writers.STATS_FILES[spec.mode])
  store = observables.ArrayStore(os.path.join(save_path, 'observables.h5'),
                                 obs.arrays if obs else (), obs.attrs if obs else {},
                                 step, enabled=parallel.is_main())

  def cut() -> dict[str, list[float]]:
    if step < spec.optim.iterations:
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(save_path, 'summary.json'))
    return writers.truncate_csv(stats_path, step)
  previous = parallel.on_main(cut)
  _warn_if_stats_lost(spec, previous, step, start)
  return store, _Rows(spec, previous)


def _loop(spec: Spec, model: iteration.Model, state: TrainState, save_path: str,
          start: start_lib.Start, obs: observables.Observables | None,
          signals: _SignalFlag) -> RunResult:
  """Iterations from the state's step to optim.iterations, with all the hooks."""
  main = parallel.is_main()
  step = int(parallel.first(state.step))
  total = spec.optim.iterations
  store, rows = _open_stats(spec, save_path, step, start, obs)
  if step >= total:
    logging.info('the run in %s is complete at step %d; raise optim.iterations to continue',
                 save_path, step)
    parallel.on_main(lambda: _summary_if_missing(save_path))  # killed before writing it
    return RunResult(save_path, step, np.asarray(rows.energies), state)
  progress = writers.Progress(total, spec.log.print_every_seconds)
  last_save, bad_in_a_row, accepted, stopped = time.monotonic(), 0, 0, False
  stats_path = os.path.join(save_path, writers.STATS_FILES[spec.mode])
  with writers.CsvWriter(stats_path, observables.stats_columns(obs), enabled=main) as csv_out:
    for t in range(step, total):
      state, stats = model.iteration.step(state)
      row = rows.row(t, stats)
      step = t + 1
      if obs:
        values = parallel.first(obs.evaluate(state.params, state.mcmc.x))
        row.update(observables.row_values(values))
        store.append(t, values)
      failed = writers.attempt(csv_out.write, row)
      # The same on every process: the statistics are all-reduced.
      bad_in_a_row = bad_in_a_row + 1 if row['rejected'] else 0
      accepted += not row['rejected']
      if bad_in_a_row:
        logging.warning('step %d rejected: non-finite energy or parameters (%d in a row); '
                        'parameters and walkers kept from the step before', t, bad_in_a_row)
        if bad_in_a_row >= spec.debug.max_bad_steps:
          csv_out.close()
          raise RunAborted(f'{bad_in_a_row} non-finite steps in a row at step {t}; stopped. '
                           + ('' if accepted else 'No step of this run was accepted: ')
                           + _blame(spec, accepted, start, save_path))
      progress.update(t, _progress_text(row))
      # Every process takes the same decisions: a signal, a due checkpoint or a failed
      # write on any one of them counts for all.
      stopped, save_due, write_failed = parallel.any_process(
          [signals.signum is not None,
           time.monotonic() - last_save > spec.log.save_frequency * 60.0, failed is not None])
      if write_failed:
        raise failed or OSError(None, 'process 0 could not write', stats_path)
      if stopped:
        break
      if save_due and step < total and not bad_in_a_row:
        csv_out.flush()
        _save(spec, save_path, state, store)
        last_save = time.monotonic()
  return _finish(spec, save_path, state, store, start, rows, accepted, stopped, signals)


def _summary_if_missing(save_path: str) -> None:
  if not os.path.exists(os.path.join(save_path, 'summary.json')):
    write_summary(save_path)


def _finish(spec: Spec, save_path: str, state: TrainState, store: observables.ArrayStore,
            start: start_lib.Start, rows: _Rows, accepted: int, stopped: bool,
            signals: _SignalFlag) -> RunResult:
  """The end of the loop: the last checkpoint, then the summary of a finished run."""
  step, total = int(parallel.first(state.step)), spec.optim.iterations
  if not accepted and not stopped:
    raise RunAborted(f'none of the {step - int(parallel.first(start.state.step))} steps of '
                     'this run was accepted (non-finite energies or parameters), so none was '
                     f'checkpointed: {_blame(spec, 0, start, save_path)}')
  path = _save(spec, save_path, state, store)
  if stopped and step < total:
    logging.warning('stopped by %s after step %d of %d; checkpoint %s. Run the same command '
                    'again to continue.', signals.cause(), step, total, path)
    return RunResult(save_path, step, np.asarray(rows.energies), state)
  logging.info('checkpoint %s', path)
  summary = parallel.on_main(lambda: write_summary(save_path))
  if summary and summary.get('energy') is None:
    raise RunAborted(f'the run ended at step {step} but its energy estimate is not finite '
                     '(the last iterations were all rejected); summary.json holds null. '
                     'See the rejected column of the statistics')
  return RunResult(save_path, step, np.asarray(rows.energies), state)


def _save(spec: Spec, save_path: str, state: TrainState,
          store: observables.ArrayStore | None = None, burned_in: bool = True) -> str:
  """Checkpoint of all processes' state (a collective), observable arrays first (so that
  they cover at least the checkpoint's steps)."""
  if store is not None:
    parallel.on_main(store.save)
  return checkpoint.save_state(save_path, state, spec.config_json, spec.log.keep, burned_in)


def write_summary(save_path: str) -> dict:
  """summary.json of a finished run (analysis.summarize_run, the Hartree-Fock energy if
  the run pretrained, and vmc.provenance.record), and its lines in the log. Strict JSON:
  a value that is not finite is written (and returned) as null."""
  summary = analysis.summarize_run(save_path)
  if not summary:
    return {}
  summary['hf_energy'] = pretrain.cached_energy(save_path)
  summary['provenance'] = provenance.record(save_path)
  for line in analysis.summary_lines(summary):
    logging.info('%s', line)
  summary = analysis.strict_json(summary)
  writers.write_text_atomically(os.path.join(save_path, 'summary.json'),
                                json.dumps(summary, indent=2, allow_nan=False) + '\n')
  return summary
