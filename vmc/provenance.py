"""Where a result came from: code, libraries, hardware, settings.

`record(run_dir)` is written into every results record (a run's summary.json, a scan's
files) so that a number can be reused, or questioned, without its author: the vmc version
and git commit (when vmc runs from a git checkout; 'dirty' if it has uncommitted changes),
the versions of Python, jax, jaxlib, kfac-jax, flax, optax, pyscf and numpy, the device
kind and count and the number of processes, the CPU runtime settings of vmc/runtime.py,
the host, the run's seed and full config (from its config.json) and the units of every
number.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from typing import Any

import vmc
from vmc import runtime

PACKAGES = ('jax', 'jaxlib', 'kfac-jax', 'flax', 'optax', 'pyscf', 'numpy', 'h5py')
UNITS = {'energy': 'hartree', 'length': 'bohr', 'force': 'hartree/bohr', 'time': 'seconds',
         'dipole': 'e bohr'}


def git_commit(path: str | None = None) -> str | None:
  """The commit of the git checkout holding `path` (default: vmc's source), with
  '-dirty' if tracked files have changed; None outside a git checkout."""
  where = path or os.path.dirname(os.path.abspath(vmc.__file__))
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=where, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                           cwd=where, capture_output=True, text=True, timeout=10,
                           check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ('-dirty' if dirty else '') if commit else None


def versions() -> dict[str, str | None]:
  out: dict[str, str | None] = {'python': platform.python_version(), 'vmc': vmc.__version__}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def devices() -> dict[str, Any]:
  import jax  # noqa: PLC0415  (this module is imported by analysis scripts without jax)
  local = jax.local_devices()
  return {'platform': local[0].platform, 'kind': local[0].device_kind,
          'count': jax.device_count(), 'local_count': len(local),
          'processes': jax.process_count()}


def record(run_dir: str | None = None) -> dict[str, Any]:
  """The provenance of a result: see the module docstring. `run_dir` adds the run's seed
  and config (from its config.json)."""
  out: dict[str, Any] = {
      'vmc_version': vmc.__version__, 'git_commit': git_commit(), 'versions': versions(),
      'devices': devices(), 'host': socket.gethostname(), 'platform': platform.platform(),
      'written_at': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
      'units': UNITS, 'runtime': runtime.describe()}
  if run_dir is not None:
    try:
      with open(os.path.join(run_dir, 'config.json')) as f:
        config = json.load(f)
      out['seed'], out['config'] = config['debug']['seed'], config
    except (OSError, ValueError, KeyError, TypeError):
      out['seed'], out['config'] = None, None
  return out
