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


def check_save_path(path: str) -> None:
  """Refuses a run folder that already holds a run: earlier results are never overwritten."""
  if os.path.isdir(path) and (checkpoint.list_checkpoints(path) or
                              os.path.exists(os.path.join(path, 'train_stats.csv'))):
    raise ConfigError(
        f'log.save_path={path} already holds a run; choose a new log.save_path (or '
        'continue from it with log.restore_path)')


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


def run(spec: Spec) -> RunResult:
  """Runs burn-in and `optim.iterations` iterations; writes stats and checkpoints."""
  cfg, system = spec.cfg, spec.system
  save_path = cfg.log.save_path or default_save_path(system.name)
  check_save_path(save_path)
  seed = seed_of(cfg)
  logging.info('system %s: %d atoms, electrons (up, down) = %s, charge %d, 2S = %d',
               system.name, len(system.atoms), system.electrons, system.charge, system.spin)
  network, batch_logabs, trainer = build(spec)
  state = init_state(spec, network, batch_logabs, trainer, jax.random.PRNGKey(seed))
  restored = bool(cfg.log.restore_path)
  if restored:
    state = restore(cfg.log.restore_path, with_opt_state(state, trainer))
  pretraining = cfg.pretrain.method == 'hf' and not restored
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
  if not restored:
    state = with_opt_state(state, trainer)

  if cfg.mcmc.burn_in > 0 and int(parallel.first(state.step)) == 0:
    t0 = time.time()
    state = trainer.burn_in(state, int(cfg.mcmc.burn_in))
    jax.block_until_ready(state.walkers.x)
    logging.info('burn-in: %d iterations of %d moves in %.1f s', cfg.mcmc.burn_in,
                 cfg.mcmc.steps, time.time() - t0)

  first_step = int(parallel.first(state.step))
  total = int(cfg.optim.iterations)
  energies = []
  moments = writers.ExponentialMoments(cfg.log.stats_ewm_alpha)
  progress = writers.Progress(total, cfg.log.print_every_seconds)
  save_every = cfg.log.save_frequency * 60.0
  t_start = time.time()
  last_save = time.monotonic()
  with writers.CsvWriter(os.path.join(save_path, 'train_stats.csv'),
                         writers.TRAIN_COLUMNS) as csv_out:
    for t in range(first_step, total):
      state, stats = trainer.step(state)
      stats = {k: float(v) for k, v in parallel.first(stats._asdict()).items()}
      ewmean, ewvar = moments.update(stats['energy'])
      row = dict(step=t, energy=stats['energy'], ewmean=ewmean, ewvar=ewvar,
                 pmove=stats['pmove'], variance=stats['variance'], move_width=stats['width'],
                 learning_rate=stats['learning_rate'], wall_time=time.time() - t_start)
      csv_out.write(row)
      energies.append(stats['energy'])
      if not np.isfinite(stats['energy']):
        logging.warning('step %d: non-finite energy %s', t, stats['energy'])
      progress.update(t, f'E={row["energy"]:.6f} Ha  ewmean={ewmean:.6f}  '
                      f'var={row["variance"]:.4f}  pmove={row["pmove"]:.2f}  '
                      f'width={row["move_width"]:.3f}')
      if time.monotonic() - last_save > save_every and t + 1 < total:
        checkpoint.save(save_path, t + 1, jax.device_get(state), config_json)
        last_save = time.monotonic()
  path = checkpoint.save(save_path, total, jax.device_get(state), config_json)
  logging.info('checkpoint %s', path)
  summarize(spec, np.asarray(energies), save_path, hf.energy if hf else None)
  return RunResult(save_path=save_path, steps=total, energies=np.asarray(energies),
                   final_state=state)


def restore(path: str, template: optimizers.TrainState) -> optimizers.TrainState:
  """Loads the latest checkpoint under `path` (a run folder or a checkpoint file)."""
  if os.path.isdir(path):
    found = checkpoint.list_checkpoints(path)
    if not found:
      raise ConfigError(f'log.restore_path={path} holds no ckpt_*.npz; point it at a run '
                        'folder with checkpoints or at a checkpoint file')
    path = found[-1][1]
  elif not os.path.isfile(path):
    raise ConfigError(f'log.restore_path={path} does not exist; give a run folder or a '
                      'ckpt_*.npz file')
  try:
    step, host_state = checkpoint.load(path, jax.device_get(template))
  except (ValueError, KeyError, OSError) as e:
    raise ConfigError(f'log.restore_path: cannot restore {path}: {e}') from None
  logging.info('restored %s at step %d', path, step)
  return host_state


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
