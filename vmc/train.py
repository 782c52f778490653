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
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vmc import analysis, checkpoint, hamiltonian, mcmc, networks, observables, optimizers, parallel
from vmc import pretrain, reference, writers
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


def batched_local_energy(local_energy, chunk_size: int):
  """(params, x (batch, 3N)) -> (batch,), all walkers at once or `chunk_size` at a time."""
  if chunk_size <= 0:
    return jax.vmap(local_energy, in_axes=(None, 0))
  return lambda params, x: jax.lax.map(lambda xi: local_energy(params, xi), x,
                                       batch_size=chunk_size)


class Model(NamedTuple):
  """What a spec builds before any state: the network and its batched functions."""
  network: networks.Network
  batch_logabs: Callable  # (params, x (batch, 3N)) -> log|psi| (batch,); what KFAC sees
  batch_sampling_logabs: Callable  # the same values, cheaper; what Metropolis evaluates
  batch_local_energy: Callable  # (params, x (batch, 3N)) -> E_L (batch,), chunked
  trainer: optimizers.Trainer


def build(spec: Spec) -> Model:
  """Network, batched functions and trainer for a spec (no state yet)."""
  cfg, system = spec.cfg, spec.system
  network = networks.make_network(system, cfg)
  batch_logabs = jax.vmap(network.logabs, in_axes=(None, 0))
  local_energy = hamiltonian.make_local_energy(network.logabs, system, cfg.optim.laplacian,
                                               network.laplacian)
  batch_local_energy = batched_local_energy(local_energy, cfg.optim.local_energy_chunk_size)
  sampling_logabs = jax.vmap(network.sampling_logabs, in_axes=(None, 0))
  trainer = optimizers.make_trainer(batch_logabs, sampling_logabs, batch_local_energy, cfg)
  return Model(network, batch_logabs, sampling_logabs, batch_local_energy, trainer)


def init_state(spec: Spec, network, batch_logabs, key) -> optimizers.TrainState:
  """Parameters, walkers and sampler state; opt_state is added by `with_opt_state`.

  `key` must be the same on every process (parameters are drawn from it); each process
  draws its own walkers and per-device RNG streams from it folded with its index.
  """
  cfg, system = spec.cfg, spec.system
  parallel.check_layout(cfg.batch_size)
  k_params, k_walkers, k_run = jax.random.split(key, 3)
  params = network.init(k_params)
  me = parallel.process_index()
  x = mcmc.init_positions(jax.random.fold_in(k_walkers, me), system,
                          cfg.batch_size // parallel.process_count(), cfg.mcmc.init_width)
  x = parallel.shard(x)
  params = parallel.replicate(params)
  logabs = parallel.pmap(batch_logabs)(params, x)
  walkers = mcmc.Walkers(x, logabs)
  return optimizers.TrainState(
      params=params, opt_state=None, walkers=walkers,
      width=parallel.replicate(jnp.asarray(cfg.mcmc.move_width, jnp.float32)),
      acceptance_sum=parallel.replicate(jnp.zeros((), jnp.float32)),
      key=parallel.split_keys(jax.random.fold_in(k_run, me)),
      step=parallel.replicate(jnp.zeros((), jnp.int32)))


def with_opt_state(state: optimizers.TrainState, trainer) -> optimizers.TrainState:
  """Initializes the optimizer for the current parameters (after pretraining)."""
  keys = parallel.pmap(lambda k: jax.random.fold_in(k, 1))(state.key)
  return state._replace(opt_state=trainer.init_opt_state(state.params, keys, state.walkers.x))


_REPLICATED = ('params', 'opt_state', 'width', 'acceptance_sum', 'step')
_RESIZABLE = ('walkers', 'key')  # batch size and device count may change between runs


def to_host(state: optimizers.TrainState, gather: bool = True) -> dict:
  """Checkpoint fields: one copy of replicated state, all walkers, every device's key.

  With gather (a collective: every process must call it), walkers and keys are those of
  all processes in process order; without, this process's only (enough for a template).
  """
  fields = {name: parallel.first(getattr(state, name)) for name in _REPLICATED}
  walkers = (parallel.unshard(state.walkers.x), parallel.unshard(state.walkers.logabs))
  keys = np.asarray(jax.device_get(state.key))
  if gather:
    walkers = tuple(parallel.gather_batch(w) for w in walkers)
    keys = parallel.gather_batch(keys)
  fields['walkers'] = mcmc.Walkers(*walkers)
  fields['key'] = keys
  return fields


def fit_fields(fields: dict, batch_size: int, n_devices: int) -> tuple[dict, str | None]:
  """Adapts checkpoint fields to a run's global batch size and device count, on the host.

  Walkers from a checkpoint with another batch size are trimmed or resampled (then need a
  burn-in); keys for another device count are split from the first stored key. Returns
  (fields, a note on what was adapted or None).
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
  if len(keys) != n_devices:
    keys = np.asarray(jax.random.split(keys[0], n_devices))
    note.append('RNG keys re-split for this device count')
  fields = dict(fields, walkers=mcmc.Walkers(x, np.zeros(len(x), np.float32)), key=keys)
  return fields, '; '.join(note) or None


def from_host(fields: dict, template: optimizers.TrainState) -> optimizers.TrainState:
  """Inverse of `to_host` (after `fit_fields`): this process's part, on its devices.

  Walkers' log|psi| is left at zero: every step recomputes it for the current parameters.
  """
  return template._replace(
      walkers=mcmc.Walkers(*(parallel.shard(parallel.local_part(a)) for a in fields['walkers'])),
      key=parallel.local_part(fields['key']),
      **{name: parallel.replicate(fields[name]) for name in _REPLICATED if name in fields})


def load_fields(path: str, templates: dict, batch_size: int, n_devices: int,
                resume: bool = True):
  """Loads the newest readable checkpoint from a run folder or a ckpt_*.npz file.

  Host only (process 0). Returns (fields fitted to the run, path, note); raises
  ConfigError with the fix if nothing can be loaded. Unless `resume` (the run's own
  folder), a checkpoint of another optimizer gives everything but its optimizer state.
  """
  optional = () if resume else ('opt_state',)
  try:
    if os.path.isdir(path):
      step, fields, path = checkpoint.load_latest(path, templates, _RESIZABLE, optional)
    elif os.path.isfile(path):
      step, fields = checkpoint.load(path, templates, _RESIZABLE, optional)
    else:
      raise ConfigError(f'log.restore_path={path} does not exist; give a run folder or a '
                        'ckpt_*.npz file')
  except checkpoint.CheckpointError as e:
    raise ConfigError(f'cannot restore: {e}; point log.restore_path at a run of the same '
                      'network, or start a new run') from None
  fields, note = fit_fields(fields, batch_size, n_devices)
  if 'opt_state' not in fields:
    note = '; '.join(filter(None, [note, 'optimizer state of another optimizer: not restored, '
                                   'initialized afresh']))
  return fields, path, note


def is_evaluation(cfg) -> bool:
  """optim.optimizer='none': the wavefunction is frozen and only sampled."""
  return cfg.optim.optimizer == 'none'


def stats_name(cfg) -> str:
  return 'eval_stats.csv' if is_evaluation(cfg) else 'train_stats.csv'


def stats_columns(cfg, obs: observables.Observables | None) -> tuple[str, ...]:
  return writers.TRAIN_COLUMNS + (obs.columns if obs else ())


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
  burn-in). Everything that can fail on bad input runs before anything is written. In a
  multi-process run every process calls this; process 0 alone reads and writes files.
  """
  cfg, system = spec.cfg, spec.system
  parallel.initialize(cfg.distributed)
  seed, save_path = parallel.share(
      (seed_of(cfg), cfg.log.save_path or default_save_path(system.name)))
  logging.info('system %s: %d atoms, electrons (up, down) = %s, charge %d, 2S = %d',
               system.name, len(system.atoms), system.electrons, system.charge, system.spin)
  network, batch_logabs, _, _, trainer = build(spec)
  obs = observables.make(network, system, cfg) if observables.enabled(cfg) else None
  state = init_state(spec, network, batch_logabs, jax.random.PRNGKey(seed))
  template = with_opt_state(state, trainer)
  n_devices = parallel.global_device_count()
  stats_path = os.path.join(save_path, stats_name(cfg))

  def inspect_disk():
    """What to start from (process 0): (checkpoint fields or None, path, note)."""
    resume_from = save_path if checkpoint.list_checkpoints(save_path) else cfg.log.restore_path
    if resume_from:
      fields, path, note = load_fields(resume_from, to_host(template, gather=False),
                                       cfg.batch_size, n_devices,
                                       resume=resume_from == save_path)
      verb = 'resuming' if resume_from == save_path else 'starting'
      if verb == 'resuming':
        writers.check_columns(stats_path, stats_columns(cfg, obs))
      return fields, f'{verb} from {path}', note
    if os.path.exists(stats_path):
      raise ConfigError(
          f'log.save_path={save_path} holds {os.path.basename(stats_path)} but no checkpoint '
          'to resume from; choose a new log.save_path')
    if cfg.pretrain.method == 'hf':
      pretrain.check_basis(system, cfg.pretrain.basis)
    return None, None, None

  fields, origin, note = parallel.on_main(inspect_disk)
  resumed = fields is not None
  needs_burn_in = not resumed or (note is not None and 'resampled' in note)
  if resumed:
    state = from_host(fields, template)
    if 'opt_state' not in fields:
      state = with_opt_state(state, trainer)
    logging.info('%s at step %d%s', origin, int(parallel.first(state.step)),
                 f' ({note})' if note else '')
    if is_evaluation(cfg) and origin.startswith('starting'):
      # An evaluation counts its own iterations, after a burn-in of its own.
      state = state._replace(step=parallel.replicate(jnp.zeros((), jnp.int32)),
                             acceptance_sum=parallel.replicate(jnp.zeros((), jnp.float32)))
      needs_burn_in = True
      logging.info('evaluation: %d iterations of the restored wavefunction after a burn-in '
                   'of %d', cfg.optim.iterations, cfg.mcmc.burn_in)
  pretraining = cfg.pretrain.method == 'hf' and not resumed
  # Everything that can fail on bad input has run: only now is anything written.
  config_json = cfg.to_json_best_effort(indent=2)
  if parallel.is_main():
    os.makedirs(save_path, exist_ok=True)
    with open(os.path.join(save_path, 'config.json'), 'w') as f:
      f.write(config_json + '\n')
  logging.info('seed %d (rerun with --config.debug.seed=%d); output in %s', seed, seed,
               save_path)
  n_params = networks.count_parameters(parallel.first(state.params))
  logging.info('network %s: %d parameters; optimizer %s', cfg.network.network_type,
               n_params, cfg.optim.optimizer)
  logging.info('parallelism: %s', parallel.describe(cfg.batch_size))

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
  return _loop(spec, state, trainer, save_path, config_json, hf, obs)


def _save(save_path: str, step: int, state, config_json: str, keep: int,
          store: observables.ArrayStore) -> str:
  """Checkpoint of all processes' state, written by process 0 (a collective)."""
  fields = to_host(state)
  if parallel.is_main():
    store.save()  # first: the arrays then cover at least the checkpoint's steps
    checkpoint.save(save_path, step, fields, config_json)
    checkpoint.prune(save_path, keep)
  return checkpoint.path_for(save_path, step)


def _loop(spec, state, trainer, save_path, config_json, hf, obs) -> RunResult:
  """Iterations from the state's step to optim.iterations, with all the hooks."""
  cfg = spec.cfg
  main = parallel.is_main()
  first_step = int(parallel.first(state.step))
  total = int(cfg.optim.iterations)
  stats_path = os.path.join(save_path, stats_name(cfg))
  store = observables.ArrayStore(os.path.join(save_path, 'observables.h5'),
                                 obs.arrays if obs else (), obs.attrs if obs else {},
                                 first_step, enabled=main)
  # Rows past the checkpoint would be written again: drop them, keep all earlier ones.
  previous = parallel.on_main(lambda: writers.truncate_csv(stats_path, first_step))
  if first_step >= total:
    logging.info('the run in %s is complete at step %d; raise optim.iterations to continue',
                 save_path, first_step)
    return RunResult(save_path=save_path, steps=first_step,
                     energies=np.asarray(previous.get('energy', [])), final_state=state)
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
  stopped = False
  with writers.CsvWriter(stats_path, stats_columns(cfg, obs), enabled=main) as csv_out, \
      _SignalFlag() as signal_flag:
    for t in range(first_step, total):
      state, stats = trainer.step(state)
      stats = {k: float(v) for k, v in parallel.first(stats._asdict()).items()}
      step = t + 1
      ewmean, ewvar = moments.update(stats['energy'])
      row = dict(step=t, energy=stats['energy'], ewmean=ewmean, ewvar=ewvar,
                 pmove=stats['pmove'], variance=stats['variance'], move_width=stats['width'],
                 learning_rate=stats['learning_rate'], rejected=int(stats['rejected']),
                 wall_time=time_offset + time.time() - t_start)
      if obs:
        values = parallel.first(obs.evaluate(state.params, state.walkers.x))
        row.update(observables.row_values(values))
        store.append(t, values)
      csv_out.write(row)
      energies.append(stats['energy'])
      if stats['rejected']:  # the same on every process: the statistics are all-reduced
        bad_in_a_row += 1
        logging.warning('step %d rejected: non-finite energy or parameters (%d in a row); '
                        'parameters and walkers kept from the step before', t, bad_in_a_row)
        if bad_in_a_row >= cfg.debug.max_bad_steps:
          csv_out.close()
          last = checkpoint.list_checkpoints(save_path) if main else []
          raise RunAborted(
              f'{bad_in_a_row} non-finite steps in a row at step {t}; stopped. Last good '
              f'checkpoint: {last[-1][1] if last else "none"}. Lower optim.lr.rate or raise '
              'optim.kfac.damping, then rerun the same command to continue from it')
      else:
        bad_in_a_row = 0
      progress.update(t, f'E={row["energy"]:.6f} Ha  ewmean={ewmean:.6f}  '
                      f'var={row["variance"]:.4f}  pmove={row["pmove"]:.2f}  '
                      f'width={row["move_width"]:.3f}')
      # Every process must take the same decisions: a signal or a due checkpoint on any
      # one of them counts for all.
      stopped, save_due = parallel.any_process(
          [signal_flag.signum is not None, time.monotonic() - last_save > save_every])
      if stopped:
        break
      if save_due and step < total:
        csv_out.flush()
        _save(save_path, step, state, config_json, cfg.log.keep, store)
        last_save = time.monotonic()
  path = _save(save_path, step, state, config_json, cfg.log.keep, store)
  if stopped and step < total:
    cause = (signal.Signals(signal_flag.signum).name if signal_flag.signum is not None
             else 'a signal to another process')
    logging.warning('stopped by %s after step %d of %d; checkpoint %s. Run the same command '
                    'again to continue.', cause, step, total, path)
  elif main:
    logging.info('checkpoint %s', path)
    summarize(spec, save_path, hf.energy if hf else None)
  return RunResult(save_path=save_path, steps=step, energies=np.asarray(energies),
                   final_state=state)


def summarize(spec: Spec, save_path: str, hf_energy: float | None = None) -> dict:
  """Reblocked energy (all of an evaluation, the last 20% of training) -> summary.json."""
  cfg = spec.cfg
  stats = analysis.read_stats(save_path, stats_name(cfg))
  if not len(stats.get('energy', [])):
    return {}
  summary = analysis.summarize_stats(stats, window=1.0 if is_evaluation(cfg) else 0.2)
  summary = dict(system=spec.system.name, mode='evaluation' if is_evaluation(cfg) else
                 'training', hf_energy=hf_energy, **summary)
  summary.update(analysis.compare_to_reference(summary['energy'], summary['energy_error'],
                                               reference.lookup(spec.system)))
  if np.isfinite(summary['energy_error']):
    error = (f' +- {summary["energy_error"]:.6f} Ha (reblocked; autocorrelation time '
             f'{summary["tau"]:.1f} iterations)')
  else:
    error = ' Ha (too few iterations for an error bar)'
  line = (f'energy over the last {summary["window_iterations"]} iterations: '
          f'{summary["energy"]:.6f}{error}')
  if summary.get('reference_energy') is not None:
    line += (f'; {summary["reference_kind"]} reference {summary["reference_energy"]:.6f} Ha '
             f'({summary["reference_source"]}): error {summary["error_mha"]:+.2f} mHa')
  logging.info('%s', line)
  if 'dipole_au' in summary:
    logging.info('dipole moment (a.u.): %s +- %s; |d| = %.4f D',
                 np.round(summary['dipole_au'], 4), np.round(summary['dipole_error_au'], 4),
                 summary['dipole_norm_debye'])
  if 's2' in summary:
    logging.info('<S^2> = %.4f +- %.4f', summary['s2'], summary['s2_error'])
  tmp = os.path.join(save_path, 'summary.json.tmp')
  with open(tmp, 'w') as f:
    json.dump(summary, f, indent=2)
  os.replace(tmp, os.path.join(save_path, 'summary.json'))
  return summary
