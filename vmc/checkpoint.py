"""Checkpoints: the whole training state, numbered by step, atomic on disk.

`ckpt_<step:06d>.npz` holds, per TrainState field, the leaves of one device's copy of the
replicated state (parameters, optimizer state, move width, ...), the walkers of all
devices gathered into one batch, the per-device RNG keys, and a JSON header (format,
step, vmc version, config). Writing goes through a temporary file, fsync and rename, so
a checkpoint on disk is either whole or absent; zip CRCs catch later corruption. Loading
needs a template state of the same structure (built from the same config), which also
catches a checkpoint from an incompatible network.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import zipfile

import jax
import numpy as np
from absl import logging

import vmc

FORMAT = 'vmc-checkpoint-2'
_NAME = re.compile(r'ckpt_(\d{6,})\.npz$')


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: unreadable, or not for this run's network."""


def path_for(directory: str, step: int) -> str:
  return os.path.join(directory, f'ckpt_{step:06d}.npz')


def save(directory: str, step: int, fields: dict, config_json: str) -> str:
  """Writes {field name: host pytree} atomically: temporary file, fsync, rename."""
  arrays = {}
  for name, tree in fields.items():
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
      arrays[f'{name}/{i:05d}'] = np.asarray(leaf)
  header = json.dumps({'format': FORMAT, 'step': int(step), 'version': vmc.__version__,
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


def prune(directory: str, keep: int) -> None:
  """Deletes all but the newest `keep` checkpoints."""
  for _, path in list_checkpoints(directory)[:-keep] if keep > 0 else []:
    os.remove(path)


def load(path: str, templates: dict, resizable: tuple[str, ...] = (),
         optional: tuple[str, ...] = ()) -> tuple[int, dict]:
  """Returns (step, {field: pytree}) shaped like `templates`.

  Leaves of fields in `resizable` may differ in their leading dimension (the caller
  adapts them); every other shape must match the template exactly. A field in `optional`
  that does not match (e.g. the state of another optimizer) is left out of the result.
  """
  try:
    with np.load(path, allow_pickle=False) as data:
      header = json.loads(str(data['header']))
      if header.get('format') != FORMAT:
        raise CheckpointError(f'{path} is not a vmc checkpoint of format {FORMAT}')
      out = {}
      for name, template in templates.items():
        leaves, treedef = jax.tree_util.tree_flatten(template)
        stored = sorted(k for k in data.files if k.startswith(name + '/'))
        if name in optional and not _matches(data, stored, leaves):
          continue
        if len(stored) != len(leaves):
          raise CheckpointError(
              f'{path} holds {len(stored)} arrays of {name}, this run needs {len(leaves)}: '
              'it comes from a different network or optimizer')
        restored = []
        for key, ref in zip(stored, leaves):
          arr = data[key]
          ref_shape = np.shape(ref)
          same = arr.shape == ref_shape or (
              name in resizable and arr.shape[1:] == ref_shape[1:])
          if not same:
            raise CheckpointError(
                f'{path}: {key} has shape {arr.shape}, this run needs {ref_shape}: it '
                'comes from a different network or system')
          restored.append(arr)
        out[name] = jax.tree_util.tree_unflatten(treedef, restored)
  except (OSError, EOFError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
    raise CheckpointError(f'{path} is unreadable ({type(e).__name__}: {e})') from None
  return header['step'], out


def _matches(data, stored: list[str], leaves: list) -> bool:
  return len(stored) == len(leaves) and all(
      data[k].shape == np.shape(ref) for k, ref in zip(stored, leaves))


def load_latest(directory: str, templates: dict, resizable: tuple[str, ...] = (),
                optional: tuple[str, ...] = ()):
  """Loads the newest readable checkpoint, falling back past corrupt ones.

  Returns (step, fields, path). Raises CheckpointError if none is readable; a checkpoint
  that is readable but incompatible with the templates is not skipped (it would be again).
  """
  found = list_checkpoints(directory)
  if not found:
    raise CheckpointError(f'{directory} holds no ckpt_*.npz')
  for step, path in reversed(found):
    try:
      got_step, fields = load(path, templates, resizable, optional)
      return got_step, fields, path
    except CheckpointError as e:
      if 'unreadable' not in str(e):
        raise
      logging.warning('checkpoint %s is corrupt or truncated (%s); trying the previous one',
                      path, e)
  raise CheckpointError(f'no readable checkpoint in {directory}')
