"""Checkpoints: the whole TrainState of one device copy, numbered by step, atomic on disk.

A checkpoint `ckpt_<step:06d>.npz` holds the state's leaves (arrays) in flattening order,
walkers gathered from all devices, plus a JSON header (format, step, config). Restoring
needs a template state of the same structure (built from the same config), which also
catches a checkpoint from an incompatible network.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re

import jax
import numpy as np

FORMAT = 'vmc-checkpoint-1'
_NAME = re.compile(r'ckpt_(\d{6,})\.npz$')


def path_for(directory: str, step: int) -> str:
  return os.path.join(directory, f'ckpt_{step:06d}.npz')


def save(directory: str, step: int, state, config_json: str) -> str:
  """Writes `state` (a host pytree) atomically: temporary file, fsync, rename."""
  leaves = jax.tree_util.tree_leaves(state)
  arrays = {f'leaf_{i:05d}': np.asarray(leaf) for i, leaf in enumerate(leaves)}
  header = json.dumps({'format': FORMAT, 'step': int(step), 'n_leaves': len(leaves),
                       'config': config_json})
  buf = io.BytesIO()
  np.savez(buf, header=np.array(header), **arrays)
  path = path_for(directory, step)
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(buf.getvalue())
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  dir_fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)
  return path


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
  """(step, path) of every checkpoint in `directory`, oldest first."""
  found = []
  for path in glob.glob(os.path.join(directory, 'ckpt_*.npz')):
    m = _NAME.search(os.path.basename(path))
    if m:
      found.append((int(m.group(1)), path))
  return sorted(found)


def load(path: str, template):
  """Returns (step, state) with `template`'s structure, dtypes and shapes checked."""
  with np.load(path, allow_pickle=False) as data:
    header = json.loads(str(data['header']))
    if header.get('format') != FORMAT:
      raise ValueError(f'{path} is not a vmc checkpoint (format {header.get("format")!r})')
    leaves, treedef = jax.tree_util.tree_flatten(template)
    if header['n_leaves'] != len(leaves):
      raise ValueError(f'{path} holds {header["n_leaves"]} arrays, the configured run needs '
                       f'{len(leaves)}: it comes from a different network or optimizer')
    restored = []
    for i, ref in enumerate(leaves):
      arr = data[f'leaf_{i:05d}']
      if arr.shape != np.shape(ref):
        raise ValueError(f'{path}: array {i} has shape {arr.shape}, the configured run needs '
                         f'{np.shape(ref)}: it comes from a different network or system')
      restored.append(arr)
  return header['step'], jax.tree_util.tree_unflatten(treedef, restored)
