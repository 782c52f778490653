"""The training loop: build everything once from the spec, then iterate.

  state = init(spec)
  burn in
  for t in range(iterations):
    state, stats = step(state)   # compiled: sample, local energy, update
    write stats, print progress, checkpoint on schedule
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import secrets
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vmc import checkpoint, hamiltonian, mcmc, networks, optimizers, parallel, pretrain
from vmc import reference
from vmc import writers
from vmc.config import Spec
from vmc.errors import ConfigError


@dataclasses.dataclass
class RunResult:
  save_path: str
  steps: int
  energies: np.ndarray  # (steps,) mean local energy per iteration
  final_state: optimizers.TrainState


def seed_of(cfg) -> int:
  if cfg.debug.seed is not None:
    return int(cfg.debug.seed)
  if cfg.debug.deterministic:
    return 23
  return secrets.randbelow(2**31)


def default_save_path(system_name: str) -> str:
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d_%H%M%S')
  return os.path.join('checkpoints', f'{system_name}_{stamp}')


def build(spec: Spec):
  """Network, batched functions and trainer for a spec (no state yet)."""
  cfg, system = spec.cfg, spec.system
  network = networks.make_network(system, cfg)
  batch_logabs = jax.vmap(network.logabs, in_axes=(None, 0))
  local_energy = hamiltonian.make_local_energy(network.logabs, system, cfg.optim.laplacian)
  batch_local_energy = jax.vmap(local_energy, in_axes=(None, 0))
  trainer = optimizers.make_trainer(batch_logabs, batch_local_energy, cfg)
  return network, batch_logabs, trainer


def init_state(spec: Spec, network, batch_logabs, trainer, key) -> optimizers.TrainState:
  """Parameters, walkers and sampler state; opt_state is added by `with_opt_state`."""
  cfg, system = spec.cfg, spec.system
  n_dev = parallel.device_count()
  if cfg.batch_size % n_dev:
    raise ConfigError(f'batch_size={cfg.batch_size} does not divide over {n_dev} devices; '
                      f'use a multiple of {n_dev}')
  k_params, k_walkers, k_run = jax.random.split(key, 3)
  params = network.init(k_params)
  x = mcmc.init_positions(k_walkers, system, cfg.batch_size, cfg.mcmc.init_width)
  x = parallel.shard(x)
  params = parallel.replicate(params)
  logabs = parallel.pmap(batch_logabs)(params, x)
  walkers = mcmc.Walkers(x, logabs)
  return optimizers.TrainState(
      params=params, opt_state=None, walkers=walkers,
      width=parallel.replicate(jnp.asarray(cfg.mcmc.move_width, jnp.float32)),
      acceptance_sum=parallel.replicate(jnp.zeros((), jnp.float32)),
      key=parallel.split_keys(k_run),
      step=parallel.replicate(jnp.zeros((), jnp.int32)))


def with_opt_state(state: optimizers.TrainState, trainer) -> optimizers.TrainState:
  """Initializes the optimizer for the current parameters (after pretraining)."""
  keys = parallel.pmap(lambda k: jax.random.fold_in(k, 1))(state.key)
  return state._replace(opt_state=trainer.init_opt_state(state.params, keys, state.walkers.x))


_REPLICATED = ('params', 'opt_state', 'width', 'acceptance_sum', 'step')
_RESIZABLE = ('walkers', 'key')  # batch size and device count may change between runs


def to_host(state: optimizers.TrainState) -> dict:
  """Checkpoint fields: one copy of replicated state, all walkers, every device's key."""
  fields = {name: parallel.first(getattr(state, name)) for name in _REPLICATED}
  fields['walkers'] = mcmc.Walkers(parallel.unshard(state.walkers.x),
                                   parallel.unshard(state.walkers.logabs))
  fields['key'] = np.asarray(jax.device_get(state.key))
  return fields


def from_host(fields: dict, template: optimizers.TrainState,
              batch_size: int) -> tuple[optimizers.TrainState, str | None]:
  """Inverse of `to_host` for this run's devices and batch size.

  Walkers from a checkpoint with another batch size are trimmed or resampled (then need a
  burn-in); keys for another device count are split from the first stored key. Returns
  (state, a note on what was adapted or None).
  """
  note = []
  x = fields['walkers'].x
  if len(x) != batch_size:
    if len(x) > batch_size:
      x = x[:batch_size]
      note.append(f'walkers trimmed from {len(fields["walkers"].x)} to {batch_size}')
    else:
      idx = np.random.default_rng(int(fields['step'])).choice(len(x), batch_size)
      x = x[idx]
      note.append(f'walkers resampled from {len(fields["walkers"].x)} to {batch_size} '
                  '(burn-in follows)')
  keys = fields['key']
  if keys.shape != np.shape(template.key):
    keys = np.asarray(jax.random.split(keys[0], parallel.device_count()))
    note.append('RNG keys re-split for this device count')
  state = template._replace(
      walkers=mcmc.Walkers(parallel.shard(x), parallel.shard(np.zeros(len(x), np.float32))),
      key=keys, **{name: parallel.replicate(fields[name]) for name in _REPLICATED})
  return state, '; '.join(note) or None


def restore(path: str, template: optimizers.TrainState, batch_size: int):
  """Loads the newest readable checkpoint from a run folder or a ckpt_*.npz file.

  Returns (state, path, note); raises ConfigError with the fix if nothing can be loaded.
  """
  templates = to_host(template)
  try:
    if os.path.isdir(path):
      step, fields, path = checkpoint.load_latest(path, templates, resizable=_RESIZABLE)
    elif os.path.isfile(path):
      step, fields = checkpoint.load(path, templates, resizable=_RESIZABLE)
    else:
      raise ConfigError(f'log.restore_path={path} does not exist; give a run folder or a '
                        'ckpt_*.npz file')
  except checkpoint.CheckpointError as e:
    raise ConfigError(f'cannot restore: {e}; point log.restore_path at a run of the same '
                      'network, or start a new run') from None
  state, note = from_host(fields, template, batch_size)
  return state, path, note


class RunAborted(RuntimeError):
  """The run stopped itself (e.g. too many non-finite steps); the message says why."""


class _SignalFlag:
  """Records SIGTERM/SIGINT so that the loop can finish the step and checkpoint."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    self.signum = signum
    logging.warning('received %s: finishing this step, then writing a checkpoint',
                    signal.Signals(signum).name)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def run(spec: Spec) -> RunResult:
  """Runs (or resumes) a training run; writes stats and checkpoints into log.save_path.

  A save_path that holds checkpoints is resumed from its newest readable one; otherwise
  the run starts from log.restore_path if given, else from scratch (pretraining,
  burn-in). Everything that can fail on bad input runs before anything is written.
  """
  cfg, system = spec.cfg, spec.system
  save_path = cfg.log.save_path or default_save_path(system.name)
  seed = seed_of(cfg)
  logging.info('system %s: %d atoms, electrons (up, down) = %s, charge %d, 2S = %d',
               system.name, len(system.atoms), system.electrons, system.charge, system.spin)
  network, batch_logabs, trainer = build(spec)
  state = init_state(spec, network, batch_logabs, trainer, jax.random.PRNGKey(seed))

  resume_from = save_path if checkpoint.list_checkpoints(save_path) else cfg.log.restore_path
  resumed = bool(resume_from)
  if resumed:
    state, ckpt_path, note = restore(resume_from, with_opt_state(state, trainer),
                                     cfg.batch_size)
    logging.info('%s from %s at step %d%s',
                 'resuming' if resume_from == save_path else 'starting', ckpt_path,
                 int(parallel.first(state.step)), f' ({note})' if note else '')
    needs_burn_in = note is not None and 'resampled' in note
  else:
    needs_burn_in = True
    if os.path.exists(os.path.join(save_path, 'train_stats.csv')):
      raise ConfigError(
          f'log.save_path={save_path} holds train_stats.csv but no checkpoint to resume '
          'from; choose a new log.save_path')
  pretraining = cfg.pretrain.method == 'hf' and not resumed
  if pretraining:
    pretrain.check_basis(system, cfg.pretrain.basis)
  # Everything that can fail on bad input has run: only now is anything written.
  os.makedirs(save_path, exist_ok=True)
  logging.info('seed %d (rerun with --config.debug.seed=%d); output in %s', seed, seed,
               save_path)
  config_json = cfg.to_json_best_effort(indent=2)
  with open(os.path.join(save_path, 'config.json'), 'w') as f:
    f.write(config_json + '\n')
  n_params = networks.count_parameters(parallel.first(state.params))
  logging.info('network %s: %d parameters; optimizer %s; %d devices, %d walkers each',
               cfg.network.network_type, n_params, cfg.optim.optimizer,
               parallel.device_count(), cfg.batch_size // parallel.device_count())

  hf = None
  if pretraining:
    hf = pretrain.hartree_fock(system, cfg.pretrain.basis, cfg.pretrain.open_shell,
                               cache_dir=save_path)
    t0 = time.time()
    state = pretrain.run(state, network, batch_logabs, hf, cfg, save_path)
    logging.info('pretraining: %d iterations in %.1f s', cfg.pretrain.iterations,
                 time.time() - t0)
  if not resumed:
    state = with_opt_state(state, trainer)
  if cfg.mcmc.burn_in > 0 and needs_burn_in:
    t0 = time.time()
    state = trainer.burn_in(state, int(cfg.mcmc.burn_in))
    jax.block_until_ready(state.walkers.x)
    logging.info('burn-in: %d iterations of %d moves in %.1f s', cfg.mcmc.burn_in,
                 cfg.mcmc.steps, time.time() - t0)
  return _loop(spec, state, trainer, save_path, config_json, hf)


def _loop(spec, state, trainer, save_path, config_json, hf) -> RunResult:
  """Iterations from the state's step to optim.iterations, with all the hooks."""
  cfg = spec.cfg
  first_step = int(parallel.first(state.step))
  total = int(cfg.optim.iterations)
  if first_step >= total:
    logging.info('the run in %s is complete at step %d; raise optim.iterations to continue',
                 save_path, first_step)
    stats = writers.truncate_csv(os.path.join(save_path, 'train_stats.csv'), first_step)
    return RunResult(save_path=save_path, steps=first_step,
                     energies=np.asarray(stats.get('energy', [])), final_state=state)
  stats_path = os.path.join(save_path, 'train_stats.csv')
  # Rows past the checkpoint would be written again: drop them, keep all earlier ones.
  previous = writers.truncate_csv(stats_path, first_step)
  moments = writers.ExponentialMoments(cfg.log.stats_ewm_alpha)
  for e in previous.get('energy', []):
    moments.update(e)
  time_offset = float(previous['wall_time'][-1]) if len(previous.get('wall_time', [])) else 0.0
  energies = list(previous.get('energy', []))
  progress = writers.Progress(total, cfg.log.print_every_seconds)
  save_every = cfg.log.save_frequency * 60.0
  t_start = time.time()
  last_save = time.monotonic()
  bad_in_a_row = 0
  step = first_step
  with writers.CsvWriter(stats_path, writers.TRAIN_COLUMNS) as csv_out, \
      _SignalFlag() as stop:
    for t in range(first_step, total):
      state, stats = trainer.step(state)
      stats = {k: float(v) for k, v in parallel.first(stats._asdict()).items()}
      step = t + 1
      ewmean, ewvar = moments.update(stats['energy'])
      row = dict(step=t, energy=stats['energy'], ewmean=ewmean, ewvar=ewvar,
                 pmove=stats['pmove'], variance=stats['variance'], move_width=stats['width'],
                 learning_rate=stats['learning_rate'], rejected=int(stats['rejected']),
                 wall_time=time_offset + time.time() - t_start)
      csv_out.write(row)
      energies.append(stats['energy'])
      if stats['rejected']:
        bad_in_a_row += 1
        logging.warning('step %d rejected: non-finite energy or parameters (%d in a row); '
                        'parameters and walkers kept from the step before', t, bad_in_a_row)
        if bad_in_a_row >= cfg.debug.max_bad_steps:
          csv_out.close()
          last = checkpoint.list_checkpoints(save_path)
          raise RunAborted(
              f'{bad_in_a_row} non-finite steps in a row at step {t}; stopped. Last good '
              f'checkpoint: {last[-1][1] if last else "none"}. Lower optim.lr.rate or raise '
              'optim.kfac.damping, then rerun the same command to continue from it')
      else:
        bad_in_a_row = 0
      progress.update(t, f'E={row["energy"]:.6f} Ha  ewmean={ewmean:.6f}  '
                      f'var={row["variance"]:.4f}  pmove={row["pmove"]:.2f}  '
                      f'width={row["move_width"]:.3f}')
      if stop.signum is not None:
        break
      if time.monotonic() - last_save > save_every and step < total:
        csv_out.flush()
        checkpoint.save(save_path, step, to_host(state), config_json)
        checkpoint.prune(save_path, cfg.log.keep)
        last_save = time.monotonic()
  path = checkpoint.save(save_path, step, to_host(state), config_json)
  checkpoint.prune(save_path, cfg.log.keep)
  if stop.signum is not None and step < total:
    logging.warning('stopped by %s after step %d of %d; checkpoint %s. Run the same command '
                    'again to continue.', signal.Signals(stop.signum).name, step, total, path)
  else:
    logging.info('checkpoint %s', path)
    summarize(spec, np.asarray(energies), save_path, hf.energy if hf else None)
  return RunResult(save_path=save_path, steps=step, energies=np.asarray(energies),
                   final_state=state)


def summarize(spec: Spec, energies: np.ndarray, save_path: str,
              hf_energy: float | None = None) -> None:
  """Logs the mean energy of the last 20% of iterations and the error to the reference."""
  if len(energies) == 0:
    return
  tail = energies[-max(1, len(energies) // 5):]
  tail = tail[np.isfinite(tail)]
  if len(tail) == 0:
    return
  mean = float(np.mean(tail))
  err = float(np.std(tail) / np.sqrt(len(tail)))
  line = f'mean energy over the last {len(tail)} iterations: {mean:.6f} Ha'
  ref = reference.lookup(spec.system)
  if ref is not None:
    line += (f'; {ref.kind} reference {ref.energy:.6f} Ha ({ref.source}): '
             f'error {1000 * (mean - ref.energy):+.2f} mHa')
  logging.info('%s (naive standard error %.2f mHa, ignores autocorrelation)', line,
               1000 * err)
  with open(os.path.join(save_path, 'summary.json'), 'w') as f:
    json.dump({'system': spec.system.name, 'iterations': int(len(energies)),
               'tail_iterations': int(len(tail)), 'energy_tail_mean': mean,
               'energy_first_iteration': float(energies[0]), 'hf_energy': hf_energy,
               'reference_energy': ref.energy if ref else None,
               'reference_source': ref.source if ref else None}, f, indent=2)
