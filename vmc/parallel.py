"""The one module that knows about devices: axis name, pmap, collectives, sharding.

Arrays that live on devices carry a leading axis of length `local_device_count()`:
parameters and optimizer state are replicated along it, walkers are split along it.
"""

from __future__ import annotations

import jax
import numpy as np

AXIS = 'devices'


def pmap(fn, **kwargs):
  return jax.pmap(fn, axis_name=AXIS, **kwargs)


def pmean(x):
  return jax.lax.pmean(x, AXIS)


def device_count() -> int:
  return jax.local_device_count()


def replicate(tree):
  """A host pytree with a leading device axis: one copy per local device.

  pmapped functions place each slice of the leading axis on its device when called.
  """
  n = device_count()
  return jax.tree_util.tree_map(
      lambda a: np.broadcast_to(np.asarray(a), (n,) + np.shape(a)).copy(), tree)


def shard(x: np.ndarray) -> np.ndarray:
  """Splits the leading batch axis of x over the local devices: (n_dev, batch / n_dev, ...)."""
  x = np.asarray(x)
  return x.reshape((device_count(), -1) + x.shape[1:])


def unshard(x) -> np.ndarray:
  """Inverse of `shard`: (n_dev, b, ...) -> (n_dev * b, ...) on the host."""
  x = np.asarray(jax.device_get(x))
  return x.reshape((-1,) + x.shape[2:])


def first(tree):
  """The copy on the first device of a replicated pytree, on the host."""
  return jax.device_get(jax.tree_util.tree_map(lambda a: a[0], tree))


def split_keys(key, n: int | None = None):
  """One independent key per local device."""
  return jax.random.split(key, n or device_count())

