"""The one module that knows about devices and processes: pmap axis, collectives, layout.

Within a process, arrays that live on devices carry a leading axis of length
`device_count()` (the local devices): parameters and optimizer state are replicated along
it, walkers are split along it. Across processes (multi-host, `jax.distributed`), the
pmapped step sees all devices of all processes through the same axis, so every `pmean`
averages over the global batch. Process 0 is the only one that reads or writes files;
what it reads reaches the others through `on_main`/`share`, and what the others hold
reaches it through `gather_batch`.

Global layout: walker rows and RNG keys are ordered by process, then local device, so a
run's checkpoint does not depend on how its devices were spread over processes.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any
from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from vmc.spec import DistributedSpec
from vmc.errors import ConfigError, one_line

AXIS = 'devices'


def pmap(fn: Callable, **kwargs: Any) -> Callable:
  """jax.pmap over the local devices with vmc's axis name (collectives below use it), made at
  the first call, so that a pmap defined at import follows the run's settings (jax 0.9
  fixes a pmap's implementation, classic or on shard_map, when it is made).

  Arguments are placed on the devices as pmap places its outputs (`on_devices`) before the
  call, so that a function compiles once whether it is first given host arrays (a new or
  restored state) or its own outputs: on JAX's shard_map-based pmap (the only one from
  jax 0.10) the two are different inputs, and the first iteration would compile twice.
  """
  static = kwargs.get('static_broadcasted_argnums', ())
  static = {static} if isinstance(static, int) else set(static)
  in_axes = kwargs.get('in_axes', 0)

  def mapped_over(i: int) -> bool:  # whether argument i has the device axis
    axis = in_axes[i] if isinstance(in_axes, (tuple, list)) else in_axes
    return i not in static and axis == 0

  @functools.cache
  def mapped() -> Callable:  # made at the first call: after runtime.configure() chose the pmap
    return jax.pmap(fn, axis_name=AXIS, **kwargs)

  @functools.wraps(fn)
  def call(*args: Any, **kwargs: Any) -> Any:  # keyword arguments are mapped over axis 0
    return mapped()(*(on_devices(a) if mapped_over(i) else a for i, a in enumerate(args)),
                    **{k: on_devices(v) for k, v in kwargs.items()})

  return call


_PLACED = tuple(getattr(jax.sharding, name) for name in ('NamedSharding', 'PmapSharding')
                if hasattr(jax.sharding, name))


@functools.cache
def _identity() -> Callable:
  return jax.pmap(lambda tree: tree, axis_name=AXIS)


def on_devices(tree: Any) -> Any:
  """`tree` (leaves with a leading local-device axis) as pmap's outputs lie on the devices:
  unchanged if they already do, else through a pmapped identity (a copy)."""
  leaves = jax.tree_util.tree_leaves(tree)
  if all(isinstance(a, jax.Array) and isinstance(a.sharding, _PLACED) for a in leaves):
    return tree
  return _identity()(tree)


def pmean(x: Any) -> Any:
  """Mean over all devices of all processes (inside pmap)."""
  return jax.lax.pmean(x, AXIS)


def device_count() -> int:
  """Devices of this process."""
  return jax.local_device_count()


def global_device_count() -> int:
  return jax.device_count()


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def is_main() -> bool:
  """True on the process that writes statistics and checkpoints (process 0)."""
  return jax.process_index() == 0


# ----------------------------------------------------------------------------------------
# Start-up of a multi-process run.


def _launched_processes() -> tuple[int, str] | None:
  """(process count, launcher) when a cluster launcher started this as one of several."""
  slurm_tasks = os.environ.get('SLURM_STEP_NUM_TASKS') or os.environ.get('SLURM_NTASKS')
  slurm_keys = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID', 'SLURM_LOCALID')
  if slurm_tasks and all(k in os.environ for k in slurm_keys) and int(slurm_tasks) > 1:
    return int(slurm_tasks), 'SLURM'
  ompi = os.environ.get('OMPI_COMM_WORLD_SIZE')
  if ompi and int(ompi) > 1:
    return int(ompi), 'Open MPI'
  return None


def initialize(dist: DistributedSpec) -> None:
  """Starts jax.distributed when this run is one of several processes, then JAX's backend.

  dist: the `distributed` config. mode 'auto' initializes when coordinator_address is set
  or a launcher (SLURM srun, Open MPI mpirun) started several processes; 'on' always
  (JAX detects the cluster); 'off' never. Explicit keys override what JAX detects. Must run
  before any JAX computation; a second call is a no-op. A backend that cannot start (say,
  JAX_PLATFORMS=cuda without the CUDA plugin or driver) is one line.
  """
  _start_distributed(dist)
  try:
    jax.devices()
  except Exception as e:  # noqa: BLE001  (JAX raises RuntimeError, or a bare AssertionError)
    platforms = os.environ.get('JAX_PLATFORMS', '')
    asked = f' for JAX_PLATFORMS={platforms}' if platforms else ''
    why = one_line(e)[:200] if str(e).strip() else type(e).__name__
    raise ConfigError(f'JAX could not start its backend{asked} ({why}); install jax with '
                      "that platform's plugin (docs/install.md), or unset JAX_PLATFORMS to "
                      'run on the CPU') from None


def _start_distributed(dist: DistributedSpec) -> None:
  if jax.distributed.is_initialized():
    return
  launched = _launched_processes()
  if dist.mode == 'off' or (dist.mode == 'auto' and not dist.coordinator_address
                            and launched is None):
    return
  kwargs: dict[str, Any] = dict(
      coordinator_address=dist.coordinator_address or None,
      num_processes=dist.num_processes, process_id=dist.process_id,
      initialization_timeout=int(dist.timeout_seconds))
  source = 'config' if dist.coordinator_address else (launched[1] if launched else 'JAX')
  logging.info('starting jax.distributed (%s); waiting up to %d s for all processes (if '
               'some never start, JAX ends this one with DEADLINE_EXCEEDED)', source,
               dist.timeout_seconds)
  # CPU-only hosts need an implementation of cross-process collectives; GPUs use NCCL.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, TypeError) as e:
    raise ConfigError(f'cannot start a multi-process run: {one_line(e)}; set '
                      'distributed.coordinator_address=HOST:PORT, distributed.num_processes '
                      'and distributed.process_id, or launch with srun/mpirun') from None
  except Exception as e:  # the coordinator is unreachable or a process never arrived
    raise ConfigError(
        f'jax.distributed did not start ({one_line(e)[:300]}); check that all processes '
        'were launched with the same coordinator address and that its port is reachable'
        ) from None
  if not is_main():  # one log for the run: the other processes report warnings only
    logging.set_verbosity(logging.WARNING)


def check_layout(batch_size: int) -> None:
  """Raises ConfigError unless the global batch splits evenly over all devices."""
  n_global, n_local = global_device_count(), device_count()
  if n_global != n_local * process_count():
    raise ConfigError(f'processes have different device counts ({n_global} devices over '
                      f'{process_count()} processes); give every process the same number')
  if batch_size % n_global:
    raise ConfigError(f'batch_size={batch_size} does not divide over {n_global} devices; '
                      f'use a multiple of {n_global}')


def describe(batch_size: int) -> str:
  return (f'{process_count()} process{"es" if process_count() > 1 else ""}, '
          f'{global_device_count()} {jax.default_backend()} devices '
          f'({device_count()} per process), {batch_size // global_device_count()} walkers '
          'per device')


# ----------------------------------------------------------------------------------------
# Host arrays <-> device arrays of this process.


def replicate(tree: Any) -> Any:
  """A host pytree with a leading device axis: one copy per local device.

  pmapped functions place each slice of the leading axis on its device when called.
  """
  n = device_count()
  return jax.tree_util.tree_map(
      lambda a: np.broadcast_to(np.asarray(a), (n,) + np.shape(a)).copy(), tree)


def shard(x: Any) -> np.ndarray:
  """Splits the leading batch axis of x over the local devices: (n_dev, batch / n_dev, ...)."""
  x = np.asarray(x)
  return x.reshape((device_count(), -1) + x.shape[1:])


def unshard(x: Any) -> np.ndarray:
  """Inverse of `shard`: (n_dev, b, ...) -> (n_dev * b, ...) on the host."""
  x = np.asarray(jax.device_get(x))
  return x.reshape((-1,) + x.shape[2:])


def first(tree: Any) -> Any:
  """The copy on the first device of a replicated pytree, on the host."""
  return jax.device_get(jax.tree_util.tree_map(lambda a: a[0], tree))


def split_keys(key: jax.Array, n: int | None = None) -> jax.Array:
  """One independent key per local device."""
  return jax.random.split(key, n or device_count())


def local_part(x: np.ndarray) -> np.ndarray:
  """This process's rows of a global array ordered by process (walkers, per-device keys)."""
  x = np.asarray(x)
  n = len(x) // process_count()
  return x[process_index() * n:(process_index() + 1) * n]


# ----------------------------------------------------------------------------------------
# Between processes (each a no-op in a single-process run). Every process must call these
# at the same point: they are collectives.


def gather_batch(x: np.ndarray) -> np.ndarray:
  """Concatenates the leading axis of a host array over all processes, in process order."""
  if process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))


def any_process(flags: Any) -> np.ndarray:
  """Element-wise OR of boolean flags over all processes (e.g. stop, checkpoint now)."""
  flags = np.asarray(flags, np.int32)
  if process_count() == 1:
    return flags.astype(bool)
  return gather_batch(flags[None]).max(axis=0).astype(bool)


def share(obj: Any) -> Any:
  """Process 0's `obj` (any picklable value) on every process; the others pass anything."""
  if process_count() == 1:
    return obj
  from jax.experimental import multihost_utils
  data = np.frombuffer(pickle.dumps(obj), np.uint8) if is_main() else np.zeros(0, np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
  if not is_main():
    data = np.zeros(size, np.uint8)
  data = multihost_utils.broadcast_one_to_all(data)
  return pickle.loads(np.asarray(data).tobytes())


def on_main(fn: Callable[[], Any]) -> Any:
  """Runs fn (file reads, SCF, ...) on process 0 only; every process gets its result.

  A ConfigError or OSError raised by fn is raised on every process, so that all stop
  together (an OSError is then one line with what is safe on disk: vmc.train.run).
  """
  if process_count() == 1:
    return fn()
  outcome = None
  if is_main():
    try:
      outcome = ('ok', fn())
    except ConfigError as e:
      outcome = ('error', str(e))
    except OSError as e:
      outcome = ('oserror', (e.errno, e.strerror or str(e), e.filename))
  kind, value = share(outcome)
  if kind == 'error':
    raise ConfigError(value)
  if kind == 'oserror':
    raise OSError(*value)
  return value
