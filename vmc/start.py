"""Where a run starts, decided before anything is written: fresh (with its SCF), resumed
from its own folder, or started from another run's checkpoint (log.restore_path).

The policy of a run folder lives here: a folder with checkpoints is resumed, and must hold
a run of the same system and optimizer; a checkpoint elsewhere gives parameters and
walkers (not the state of another optimizer) to a new run, and one of another system is a
warm start whose walkers move with the nuclei and burn in again; an evaluation counts its
own iterations. vmc.checkpoint only reads, writes and fits checkpoint files.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vmc import checkpoint, config, geometry, iteration, observables, parallel, pretrain
from vmc import systems, writers
from vmc.config import Spec
from vmc.errors import ConfigError
from vmc.spec import DebugSpec
from vmc.types import TrainState


def seed_of(debug: DebugSpec) -> int:
  if debug.seed is not None:
    return debug.seed
  if debug.deterministic:
    return 23
  return secrets.randbelow(2**31)


def default_save_path(system_name: str) -> str:
  stamp = datetime.datetime.now(datetime.UTC).strftime('%Y%m%d_%H%M%S')
  return os.path.join('checkpoints', f'{system_name}_{stamp}')


class Start(NamedTuple):
  """Where a run starts, decided before anything is written."""
  state: TrainState  # with opt_state when restored; without (None) when fresh
  restored: Restored | None  # from a checkpoint, own folder or restore_path
  resumed: bool  # from the run's own folder
  needs_burn_in: bool
  hf: pretrain.HartreeFock | None  # the SCF, when this run pretrains


def find(spec: Spec, model: iteration.Model, seed: int, save_path: str,
                obs: observables.Observables | None) -> Start:
  """Fresh state, or the newest checkpoint of the run folder, or log.restore_path."""
  state = iteration.init_state(spec, model, jax.random.PRNGKey(seed))
  template = iteration.with_opt_state(state, model)
  stats_path = os.path.join(save_path, writers.STATS_FILES[spec.mode])

  def inspect_disk() -> tuple[Restored | None, bool]:
    resume = bool(checkpoint.list_checkpoints(save_path))
    source = save_path if resume else spec.log.restore_path
    if source:
      if resume:
        writers.check_columns(stats_path, observables.stats_columns(obs, spec.states))
      return (restore(source, template, spec.batch_size, resume, spec.system),
              resume)
    if os.path.exists(stats_path):
      raise ConfigError(
          f'log.save_path={save_path} holds {os.path.basename(stats_path)} but no checkpoint '
          'to resume from; choose a new log.save_path')
    return None, False

  restored, resumed = parallel.on_main(inspect_disk)
  if restored is None:
    hf = None
    if spec.pretrain.method == 'hf':  # before anything is written: a failing SCF is an error
      hf = pretrain.hartree_fock(spec.system, spec.pretrain.basis, spec.pretrain.open_shell,
                                 cache_dir=save_path, write_cache=False,
                                 pp_basis=spec.pp.basis if spec.pp else '')
      if spec.states:
        pretrain.excitations(hf, spec.states)  # enough of them in the basis, or refused
    return Start(state, None, False, True, hf)
  state = checkpoint.state_from_fields(restored.fields, template)
  if not restored.opt_state_restored:
    state = iteration.with_opt_state(state, model)
  restored_step = int(parallel.first(state.step))
  if not resumed and not spec.evaluation and restored_step >= spec.optim.iterations:
    raise ConfigError(
        f'log.restore_path {restored.path} is at step {restored_step}, and optim.iterations='
        f'{spec.optim.iterations} counts on from it (the learning-rate schedule continues), '
        f'so this run would train nothing: set optim.iterations above {restored_step}, '
        f'e.g. {restored_step + 1000}')
  verb = 'resuming' if resumed else 'starting'
  logging.info('%s from %s at step %d%s', verb, restored.path, int(parallel.first(state.step)),
               f' ({"; ".join(restored.notes)})' if restored.notes else '')
  needs_burn_in = restored.needs_burn_in
  if spec.evaluation and not resumed:
    # An evaluation counts its own iterations, after a burn-in of its own.
    state = state._replace(step=parallel.replicate(jnp.zeros((), jnp.int32)),
                           mcmc=state.mcmc._replace(
                               acceptance_sum=parallel.replicate(jnp.zeros((), jnp.float32))))
    needs_burn_in = True
    length = (f'up to {spec.budget_minutes:.1f} minutes (budget_minutes)' if spec.budget_minutes
              else f'{spec.optim.iterations} iterations')
    logging.info('evaluation: %s of the restored wavefunction after a burn-in of %d', length,
                 spec.mcmc.burn_in)
  return Start(state, restored, resumed, needs_burn_in, None)


def seed(debug: DebugSpec, save_path: str) -> int:
  """The run's seed: debug.seed or debug.deterministic's, else the one that an earlier
  attempt in this folder recorded in config.json (so that a rerun after a kill before the
  first checkpoint repeats it), else a new random one."""
  if debug.seed is None and not debug.deterministic:
    try:
      with open(os.path.join(save_path, 'config.json')) as f:
        recorded = json.load(f)['debug']['seed']
      if isinstance(recorded, int):
        return recorded
    except (OSError, ValueError, KeyError, TypeError):
      pass
  return seed_of(debug)


class Restored(NamedTuple):
  """Checkpoint fields fitted to a run, and what had to change."""
  fields: dict[str, Any]
  path: str
  # Walkers resampled to a larger batch, moved to another system, or saved before their
  # burn-in: they need one.
  needs_burn_in: bool
  opt_state_restored: bool  # False: a checkpoint of another optimizer
  notes: tuple[str, ...]  # what was adapted, for the log


def restore(path: str, template: TrainState, batch_size: int, resume: bool,
            system: systems.System) -> Restored:
  """Loads the newest readable checkpoint of a run folder, or a ckpt_*.npz file, fitted to
  this run's batch and devices. Host only (process 0).

  Raises ConfigError with the fix if nothing can be loaded. With `resume` (the run's own
  folder) the checkpoint must be of the same system and optimizer, and unreadable
  checkpoints are set aside; otherwise a checkpoint of another optimizer gives everything
  but its optimizer state, and one of another system (a warm start) is taken with a
  warning and a burn-in.
  """
  templates = checkpoint.state_fields(template, gather=False)
  optional = () if resume else ('opt_state',)
  skipped: list[str] = []
  try:
    if os.path.isdir(path):
      header, fields, path, skipped = checkpoint.load_latest(path, templates,
                                                             checkpoint.RESIZABLE, optional)
    elif os.path.isfile(path):
      header, fields = checkpoint.load(path, templates, checkpoint.RESIZABLE, optional)
    else:
      raise ConfigError(f'log.restore_path={path} does not exist; give a run folder or a '
                        'ckpt_*.npz file')
  except checkpoint.CheckpointError as e:
    raise ConfigError(f'cannot restore: {e}; point log.restore_path at a run of the same '
                      'network, or start a new run') from None
  fields, resampled, notes = checkpoint.fit_fields(fields, batch_size,
                                                   parallel.global_device_count())
  if 'opt_state' not in fields:
    notes.append('optimizer state of another optimizer: not restored, initialized afresh')
  moved, theirs = _system_change(header, system)
  if moved and resume:
    raise ConfigError(f'log.save_path holds a run of {moved}; resume it with its own '
                      'system.* settings, or give a new log.save_path')
  if moved:
    logging.warning('log.restore_path %s is a checkpoint of %s: its parameters and walkers '
                    'are a warm start, and a burn-in follows', path, moved)
    if theirs is not None and _same_particles(theirs, system):
      fields['walkers'] = geometry.move_walkers(fields['walkers'], theirs.positions,
                                                system.positions)
      notes.append('walkers moved with the nuclei')
  for bad in skipped if resume else []:
    # Renamed, so that pruning never keeps them in place of good ones.
    os.replace(bad, bad + '.corrupt')
    logging.warning('%s set aside as %s.corrupt', bad, os.path.basename(bad))
  burned_in = bool(header.get('burned_in', True))
  if not burned_in:
    notes.append('saved after pretraining, before the burn-in: burn-in follows')
  return Restored(fields, path, resampled or bool(moved) or not burned_in,
                  'opt_state' in fields, tuple(notes))


def _same_particles(a: systems.System, b: systems.System) -> bool:
  """Same electrons, elements and Hamiltonian (all-electron or which atoms carry an ECP)."""
  return a.electrons == b.electrons and a.hamiltonian == b.hamiltonian and [
      x.symbol for x in a.atoms] == [x.symbol for x in b.atoms]


def _system_change(header: dict[str, Any],
                   system: systems.System) -> tuple[str | None, systems.System | None]:
  """('<their system>, not <this system>', their system) when the checkpoint's config is
  of another system (other nuclei, positions or electrons); (None, ...) when the same or
  not known."""
  try:
    theirs = config.system_from_json(header['config'])
  except (ConfigError, KeyError, TypeError, ValueError):
    return None, None  # a config of another vmc version: nothing to compare with
  label, here = systems.describe(theirs), systems.describe(system)
  if not _same_particles(theirs, system):
    return f'{label}, not {here}', theirs
  shift = float(np.max(np.abs(theirs.positions - system.positions)))
  return (f'{label} at another geometry (nuclei moved by up to {shift:.4g} bohr)' if (
      shift > 1e-6) else None), theirs


def open_stats(spec: Spec, save_path: str, step: int, start: Start,
               obs: observables.Observables | None
               ) -> tuple[observables.ArrayStore, writers.TrainingRows]:
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
  return store, writers.TrainingRows(spec.log.stats_ewm_alpha, previous, spec.states)


def _warn_if_stats_lost(spec: Spec, previous: dict[str, list[float]], step: int,
                        start: Start) -> None:
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


def blame(spec: Spec, accepted: int, start: Start, save_path: str) -> str:
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


def write_run_folder(spec: Spec, save_path: str, start: Start, seed: int) -> None:
  """config.json, with the seed used (and the SCF cache): the first files a run writes."""
  if not parallel.is_main():
    return
  config = json.loads(spec.config_json)
  config['debug']['seed'] = seed
  writers.write_text_atomically(os.path.join(save_path, 'config.json'),
                                json.dumps(config, indent=2) + '\n')
  if start.hf is not None:
    pretrain.write_cache_file(start.hf, save_path)
