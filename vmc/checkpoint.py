"""Checkpoints: the whole training state, numbered by step, atomic on disk.

`ckpt_<step:06d>.npz` holds the fields of a TrainState: the leaves of one device's copy
of the replicated parts (`params`, `opt_state`, move `width`, `acceptance_sum`, `step`),
the `walkers` of all devices and processes gathered into one batch, the per-device RNG
`key`s, and a JSON header (format, step, vmc version, config). Writing goes through a
temporary file, fsync and rename, so a checkpoint on disk is either whole or absent; zip
CRCs catch later corruption. Loading needs a template state of the same structure (built
from the same config), which also catches a checkpoint from an incompatible network.
Checkpoints do not depend on the device count: `restore` fits walkers and keys to the run.
"""

from __future__ import annotations

import glob
import json
import os
import re
import zipfile
from typing import Any

import jax
import numpy as np
from absl import logging

import vmc
from vmc import parallel, writers
from vmc.types import MCMCState, TrainState

FORMAT = 'vmc-checkpoint-3'
# Older formats still read: per field, how many leading leaves to keep (format 2 also
# stored log|psi| of the walkers, which every step recomputes).
_LEGACY = {'vmc-checkpoint-2': {'walkers': 1}}
_NAME = re.compile(r'ckpt_(\d{6,})\.npz$')
_REPLICATED = ('params', 'opt_state', 'width', 'acceptance_sum', 'step')
RESIZABLE = ('walkers', 'key')  # batch size and device count may change between runs


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: unreadable, or not for this run's network."""


class CorruptCheckpoint(CheckpointError):
  """A checkpoint file that cannot be read at all (truncated, zeroed, not a checkpoint)."""


def path_for(directory: str, step: int) -> str:
  return os.path.join(directory, f'ckpt_{step:06d}.npz')


def save(directory: str, step: int, fields: dict[str, Any], config_json: str,
         burned_in: bool = True) -> str:
  """Writes {field name: host pytree} atomically: temporary file, fsync, rename.

  `burned_in` False marks the state after pretraining, before its burn-in (a resume then
  burns in). A failed write (e.g. a full disk) removes its temporary file and raises
  OSError; the checkpoints already on disk are untouched.
  """
  arrays: dict[str, Any] = {'header': None}  # first in the file
  for name, tree in fields.items():
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
      arrays[f'{name}/{i:05d}'] = np.asarray(leaf)
  header = json.dumps({'format': FORMAT, 'step': int(step), 'version': vmc.__version__,
                       'burned_in': burned_in, 'config': config_json})
  arrays['header'] = np.array(header)
  path = path_for(directory, step)

  def write(tmp: str) -> None:
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
  writers.write_atomically(path, write)
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


def load(path: str, templates: dict[str, Any], resizable: tuple[str, ...] = (),
         optional: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
  """Returns (header, {field: pytree} shaped like `templates`); the header holds `step`,
  `config` (JSON text), `version` and `burned_in`.

  Leaves of fields in `resizable` may differ in their leading dimension (the caller
  adapts them); every other shape must match the template exactly. A field in `optional`
  that does not match (e.g. the state of another optimizer) is left out of the result.
  """
  try:
    with np.load(path, allow_pickle=False) as data:
      header = json.loads(str(data['header']))
      if not isinstance(header, dict) or not isinstance(header.get('step'), int):
        raise ValueError('no checkpoint header')
      if header.get('format') != FORMAT and header.get('format') not in _LEGACY:
        raise CheckpointError(f'{path} has checkpoint format {header.get("format")!r}; this vmc '
                              f'reads {FORMAT} and {", ".join(_LEGACY)}')
      keep = _LEGACY.get(header['format'], {})
      out = {}
      for name, template in templates.items():
        leaves, treedef = jax.tree_util.tree_flatten(template)
        stored = sorted(k for k in data.files if k.startswith(name + '/'))[:keep.get(name)]
        if name in optional and not _matches(data, stored, leaves):
          continue
        if len(stored) != len(leaves):
          raise CheckpointError(
              f'{path} holds {len(stored)} arrays of {name}, this run needs {len(leaves)}: '
              'it comes from a different network or optimizer')
        restored = []
        for key, ref in zip(stored, leaves, strict=True):
          arr = data[key]
          ref_shape = np.shape(ref)
          same = arr.shape == ref_shape or (
              name in resizable and arr.shape[1:] == ref_shape[1:])
          if not same:
            raise CheckpointError(
                f'{path}: {key} has shape {arr.shape}, this run needs {ref_shape}: it '
                'comes from a different network, system or system.states')
          restored.append(arr)
        out[name] = jax.tree_util.tree_unflatten(treedef, restored)
  except (EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
    # Format errors only: an OSError (EIO, ESTALE on a network filesystem) may pass, and
    # must not make a good checkpoint look corrupt.
    if isinstance(e, CheckpointError):
      raise
    raise CorruptCheckpoint(f'{path} is unreadable ({type(e).__name__}: {e})') from None
  return header, out


def _matches(data: Any, stored: list[str], leaves: list) -> bool:
  return len(stored) == len(leaves) and all(
      data[k].shape == np.shape(ref) for k, ref in zip(stored, leaves, strict=True))


def load_latest(directory: str, templates: dict[str, Any], resizable: tuple[str, ...] = (),
                optional: tuple[str, ...] = ()
                ) -> tuple[dict[str, Any], dict[str, Any], str, list[str]]:
  """Loads the newest readable checkpoint, falling back past corrupt ones.

  Returns (header, fields, path, the newer unreadable checkpoints skipped). Raises
  CheckpointError if none is readable; a checkpoint that is readable but incompatible
  with the templates is not skipped (it would be again).
  """
  found = list_checkpoints(directory)
  if not found:
    raise CheckpointError(f'{directory} holds no ckpt_*.npz')
  corrupt = []
  for _, path in reversed(found):
    try:
      header, fields = load(path, templates, resizable, optional)
    except CorruptCheckpoint as e:
      logging.warning('%s; trying the previous checkpoint', e)
      corrupt.append(path)
      continue
    return header, fields, path, corrupt
  raise CheckpointError(f'no readable checkpoint in {directory}')


# ----------------------------------------------------------------------------------------
# TrainState <-> checkpoint fields.


def state_fields(state: TrainState, gather: bool = True) -> dict[str, Any]:
  """Checkpoint fields of a state: one copy of the replicated parts, all walkers, every
  device's key (host arrays).

  With gather (a collective: every process must call it), walkers and keys are those of
  all processes in process order; without, this process's only (enough for a template).
  """
  replicated = dict(params=state.params, opt_state=state.opt_state, width=state.mcmc.width,
                    acceptance_sum=state.mcmc.acceptance_sum, step=state.step)
  fields = {name: parallel.first(value) for name, value in replicated.items()}
  walkers = parallel.unshard(state.mcmc.x)
  keys = np.asarray(jax.device_get(state.key))
  if gather:
    walkers, keys = parallel.gather_batch(walkers), parallel.gather_batch(keys)
  fields.update(walkers=walkers, key=keys)
  return fields


def save_state(directory: str, state: TrainState, config_json: str, keep: int,
               burned_in: bool = True) -> str:
  """Checkpoint of all processes' state at its step, written by process 0 and pruned to
  the newest `keep` (a collective: every process must call it). Returns its path."""
  fields = state_fields(state)
  step = int(fields['step'])

  def write() -> None:
    save(directory, step, fields, config_json, burned_in)
    prune(directory, keep)
  parallel.on_main(write)  # a failed write stops every process, not process 0 alone
  return path_for(directory, step)


def fit_fields(fields: dict[str, Any], batch_size: int,
               n_devices: int) -> tuple[dict[str, Any], bool, list[str]]:
  """Adapts checkpoint fields to a run's global batch size and device count, on the host.

  Walkers from a checkpoint with another batch size are trimmed or resampled (then need a
  burn-in); keys for another device count are split from the first stored key. Returns
  (fields, resampled, notes on what was adapted).
  """
  notes, resampled = [], False
  x = fields['walkers']
  if len(x) > batch_size:
    x = x[:batch_size]
    notes.append(f'walkers trimmed from {len(fields["walkers"])} to {batch_size}')
  elif len(x) < batch_size:
    x = x[np.random.default_rng(int(fields['step'])).choice(len(x), batch_size)]
    resampled = True
    notes.append(f'walkers resampled from {len(fields["walkers"])} to {batch_size} '
                 '(burn-in follows)')
  keys = fields['key']
  if len(keys) != n_devices:
    keys = np.asarray(jax.random.split(keys[0], n_devices))
    notes.append('RNG keys re-split for this device count')
  return dict(fields, walkers=x, key=keys), resampled, notes


def state_from_fields(fields: dict[str, Any], template: TrainState) -> TrainState:
  """Inverse of `state_fields` (after `fit_fields`): this process's part, on its devices.
  Fields missing from `fields` (an optimizer state not restored) keep the template's."""
  replicated = {name: parallel.replicate(fields[name]) for name in _REPLICATED
                if name in fields}
  walkers = MCMCState(x=parallel.shard(parallel.local_part(fields['walkers'])),
                      width=replicated.get('width', template.mcmc.width),
                      acceptance_sum=replicated.get('acceptance_sum',
                                                    template.mcmc.acceptance_sum))
  return template._replace(
      params=replicated.get('params', template.params),
      opt_state=replicated.get('opt_state', template.opt_state),
      step=replicated.get('step', template.step), mcmc=walkers,
      key=parallel.local_part(fields['key']))
