"""A run: build everything once from the spec, then its phases, each a loop with hooks.

  model = iteration.build(spec)             network, sampler, objective, optimizer
  start = start.find(...)                   fresh (+ SCF), resumed, or log.restore_path
  pretraining, burn-in                      loop.iterate, each phase saved at its end
  training or evaluation                    loop.iterate(model.iteration.step, hooks:
                                            observables, statistics file, NaN streak,
                                            progress, checkpoints, budget), a checkpoint
                                            at the end
  summary.json                              analysis.summarize_run + provenance
  with budget_minutes: the evaluation       the same in <save_path>/evaluation (vmc.budget)

The run holds its folder's lock (vmc.runfolder) throughout, and saves its work at the end
of every phase, so that the same command always continues. SIGTERM and SIGINT are
honoured from the start (vmc.loop.Signals): before anything is written the run just
stops; during the SCF, pretraining or burn-in it stops after the current piece of work and
says what the next run will redo; during training it checkpoints and stops. Everything
that can fail on bad input (config, checkpoints, basis, SCF) runs before anything is
written; a file operation that fails later (a full disk) ends the run with one line
saying what is safe on disk. Process 0 alone reads and writes files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from vmc import analysis, budget, checkpoint, clock, iteration, loop, networks, observables
from vmc import parallel, pretrain, provenance, runfolder, runtime, start as start_lib, writers
from vmc.config import Spec
from vmc.errors import RunAborted
from vmc.types import TrainState

__all__ = ['RunAborted', 'RunResult', 'run']

BURN_IN_CHUNK = 10  # burn-in iterations per compiled call: a signal waits at most this long


@dataclasses.dataclass
class RunResult:
  save_path: str
  steps: int  # iterations done
  energies: np.ndarray  # (steps,) mean local energy per iteration
  final_state: TrainState | None  # None when stopped before training started
  complete: bool = False  # reached optim.iterations or its budget (not stopped)


def run(spec: Spec) -> RunResult:
  """Runs (or resumes) a run; writes statistics and checkpoints into log.save_path.

  A save_path that holds checkpoints is resumed from its newest readable one; otherwise
  the run starts from log.restore_path if given, else from scratch (SCF, pretraining,
  burn-in). The run holds the folder's lock throughout. In a multi-process run every
  process calls this. With budget_minutes, a finished training is followed by its
  evaluation (vmc.budget); the training's result is returned.
  """
  t0 = clock.now()
  parallel.initialize(spec.distributed)
  runtime.configure()  # process settings, before anything is compiled (vmc/runtime.py)
  save_path = parallel.share(spec.log.save_path or start_lib.default_save_path(spec.system.name))
  with loop.Signals() as signals:
    return _run_phase(spec, save_path, signals, t0, evaluate=True)


def _evaluate(spec: Spec, save_path: str, result: RunResult, signals: loop.Signals) -> None:
  """A budget's evaluation of a finished training (vmc.budget), if it has one; called while
  the training's folder is locked, so that no other run renames or reuses the evaluation
  folder inside it."""
  budget.check_training(spec, len(result.energies), result.steps)
  evaluation = budget.evaluation_spec(spec, save_path)
  if evaluation is None:
    return
  if signals.any_process():
    logging.warning('stopped by %s before the evaluation; run the same command again to '
                    'evaluate', signals.cause())
    return
  logging.info('budget: evaluating the trained wavefunction for %.1f minutes in %s',
               evaluation.budget_minutes, evaluation.log.save_path)
  _run_phase(evaluation, evaluation.log.save_path, signals, clock.now())


def _run_phase(spec: Spec, save_path: str, signals: loop.Signals, t0: float,
               evaluate: bool = False) -> RunResult:
  """One run folder, under its lock; with `evaluate`, a finished training's evaluation
  (`_evaluate`) follows before the lock is released."""
  system = spec.system
  logging.info('system %s: %d atoms, electrons (up, down) = %s, charge %d, 2S = %d, %s',
               system.name, len(system.atoms), system.electrons, system.charge, system.spin,
               system.hamiltonian)
  budget.check(spec, save_path)
  spec = budget.calibrated(spec, save_path)  # the learning rate of a measured budget
  model = iteration.build(spec)
  obs = (observables.make(model.network, model.objective.local_energy, system,
                          spec.observables)
         if spec.observables.enabled else None)
  with runfolder.locked(save_path):
    try:
      result = _run_in_folder(spec, model, obs, save_path, signals, t0)
    except OSError as e:
      raise RunAborted(runfolder.write_failure(e, save_path)) from None
    except jax.errors.JaxRuntimeError as e:
      if not runfolder.is_out_of_memory(e):
        raise
      raise RunAborted(runfolder.out_of_memory(e, spec.batch_size, save_path)) from None
    if evaluate and result.complete:
      _evaluate(spec, save_path, result, signals)
  return result


def _run_in_folder(spec: Spec, model: iteration.Model, obs: observables.Observables | None,
                   save_path: str, signals: loop.Signals, t0: float) -> RunResult:
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
  start_lib.write_run_folder(spec, save_path, start, seed)
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
  return _train(spec, model, state, save_path, start, obs, signals, t0)


def _prepare(spec: Spec, model: iteration.Model, start: start_lib.Start, save_path: str,
             signals: loop.Signals) -> TrainState | None:
  """Pretraining (fresh runs), the optimizer state, and burn-in; None if a signal came.

  A checkpoint follows pretraining (marked as before its burn-in) and the burn-in (the
  state at the first training step), so that a rerun never repeats finished work.
  """
  state = start.state
  if start.hf is not None:
    t0 = time.time()
    pretrained = pretrain.run(state, model.network, start.hf, spec, save_path, signals)
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
    t0, n = time.time(), spec.mcmc.burn_in

    def burn(state: TrainState, chunk: int) -> tuple[TrainState, dict]:
      return model.iteration.burn_in(state, min(BURN_IN_CHUNK, n - chunk * BURN_IN_CHUNK)), {}
    chunks = -(-n // BURN_IN_CHUNK)
    state, done, stopped = loop.iterate(burn, state, 0, chunks, [], signals)
    if stopped:
      logging.warning('stopped by %s during burn-in (%d of %d iterations); the next run '
                      'redoes the burn-in', signals.cause(), done * BURN_IN_CHUNK, n)
      return None
    jax.block_until_ready(state.mcmc.x)
    logging.info('burn-in: %d iterations of %d moves in %.1f s', n, spec.mcmc.steps,
                 time.time() - t0)
  if not start.resumed or start.needs_burn_in:
    _save(spec, save_path, state)  # the state at the first training step
  return state


def _train(spec: Spec, model: iteration.Model, state: TrainState, save_path: str,
           start: start_lib.Start, obs: observables.Observables | None,
           signals: loop.Signals, t0: float) -> RunResult:
  """Iterations from the state's step to optim.iterations (or to the budget's wall
  time), with their hooks."""
  first, total = int(parallel.first(state.step)), spec.optim.iterations
  store, rows = start_lib.open_stats(spec, save_path, first, start, obs)
  deadline = (budget.Deadline(budget.allowance(spec, save_path, clock.now() - t0))
              if spec.budget_minutes else None)
  if deadline and deadline.limit <= 0 and not rows.energies:
    raise RunAborted(f'budget_minutes={spec.budget_minutes:g}: the SCF, pretraining and '
                     f'burn-in used {budget.share(spec) - deadline.limit:.0f} s, all of this '
                     f'{spec.mode}\'s share ({budget.share(spec):.0f} s); raise budget_minutes '
                     '(the same command then goes on from the saved state)')
  if first >= total or (deadline and rows.time_offset >= deadline.limit):
    what = 'budget_minutes' if first < total else 'optim.iterations'
    logging.info('the run in %s is complete at step %d; raise %s to continue', save_path,
                 first, what)
    parallel.on_main(lambda: _summary_if_missing(save_path))  # killed before writing it
    return RunResult(save_path, first, np.asarray(rows.energies), state, complete=True)
  if deadline:
    logging.info('budget: %s until wall_time %.0f s (%.1f of %.1f minutes after the '
                 'preparation), then stops', spec.mode, deadline.limit, deadline.limit / 60,
                 spec.budget_minutes)

  def stepper(iteration_step: Callable) -> Callable:
    def step(state: TrainState, t: int) -> tuple[TrainState, dict]:
      state, stats = iteration_step(state)
      return state, rows.row(t, parallel.first(stats._asdict()))
    return step

  stats_path = os.path.join(save_path, writers.STATS_FILES[spec.mode])
  with writers.CsvWriter(stats_path, observables.stats_columns(obs, spec.states),
                         enabled=parallel.is_main()) as csv:
    streak = loop.NanStreak(spec.debug.max_bad_steps, lambda accepted: start_lib.blame(
        spec, accepted, start, save_path))
    hooks = [*([observables.Measure(obs, store)] if obs else []),
             loop.StatsFile(csv, stats_path), streak,
             loop.Progress(total, spec.log.print_every_seconds, writers.progress_text,
                           seconds_left=None if deadline is None
                           else lambda: deadline.limit - rows.wall_time()),
             loop.Checkpoints(spec.log.save_frequency, total,
                              lambda s: _save(spec, save_path, s, store), streak, csv.flush),
             *([deadline] if deadline else [])]
    step, start_at, stopped, go_on = stepper(model.iteration.step), first, False, True
    if budget.calibrating(spec, save_path):
      # The first iterations time the step; the schedule's delay follows (vmc.budget).
      rate = budget.Rate()
      until = min(total, first + budget.CALIBRATION_ITERATIONS)
      state, start_at, stopped = loop.iterate(step, state, first, until, [*hooks, rate],
                                              signals)
      ended = parallel.any_process([deadline is not None and deadline.reached])[0]
      go_on = not stopped and not ended and start_at < total
      if go_on:
        spec = budget.calibrated(spec, save_path, rate.seconds_per_iteration())
        step = stepper(iteration.build(spec).iteration.step)  # compiled again, once
    if go_on:
      state, _, stopped = loop.iterate(step, state, start_at, total, hooks, signals)
  return _finish(spec, save_path, state, store, start, rows, streak.accepted, stopped,
                 signals)


def _finish(spec: Spec, save_path: str, state: TrainState, store: observables.ArrayStore,
            start: start_lib.Start, rows: writers.TrainingRows, accepted: int, stopped: bool,
            signals: loop.Signals) -> RunResult:
  """The end of the loop: the last checkpoint, then the summary of a finished run."""
  step, total = int(parallel.first(state.step)), spec.optim.iterations
  if not accepted and not stopped:
    raise RunAborted(f'none of the {step - int(parallel.first(start.state.step))} steps of '
                     'this run was accepted (non-finite energies or parameters), so none was '
                     f'checkpointed: {start_lib.blame(spec, 0, start, save_path)}')
  path = _save(spec, save_path, state, store)
  if stopped and step < total:
    logging.warning('stopped by %s after step %d of %d; checkpoint %s. Run the same command '
                    'again to continue.', signals.cause(), step, total, path)
    return RunResult(save_path, step, np.asarray(rows.energies), state)
  if step < total:
    logging.info('budget: %s ended at step %d, wall_time %.0f s', spec.mode, step,
                 rows.wall_time())
  logging.info('checkpoint %s', path)
  summary = parallel.on_main(lambda: write_summary(save_path))
  if summary and summary.get('energy') is None:
    raise RunAborted(f'the run ended at step {step} but its energy estimate is not finite '
                     '(the last iterations were all rejected); summary.json holds null. '
                     'See the rejected column of the statistics')
  return RunResult(save_path, step, np.asarray(rows.energies), state, complete=True)


def _summary_if_missing(save_path: str) -> None:
  if not os.path.exists(os.path.join(save_path, 'summary.json')):
    write_summary(save_path)


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
