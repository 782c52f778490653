"""The run folder: one process at a time, and no stray temporary files.

A run holds an exclusive lock on `<save_path>/.vmc.lock` for its whole life (process 0
of a multi-process run). The lock is `flock(2)`: the kernel releases it when the process
ends in any way, kill -9 included, so a lock left by a dead process is stale by
construction and the next run simply takes it; the file's text (host, pid, start time)
only serves the error message of a second run that finds the lock held. Linux emulates
flock over NFS with byte-range locks, so the lock also holds across the nodes of a
cluster that share the folder.

A folder that the lock created and that nothing else was written into is removed again
when the run ends (e.g. on a failed SCF), so a run that fails before its first output
leaves nothing behind.
"""

from __future__ import annotations

import datetime
import fcntl
import glob
import os
import socket
from typing import Self

from absl import logging

from vmc.errors import ConfigError

LOCK_NAME = '.vmc.lock'


class RunFolderLock:
  """Context manager: creates the folder if needed and holds its lock, or raises
  ConfigError naming the process that holds it. With enabled=False (processes other than
  0 of a multi-process run) it does nothing."""

  def __init__(self, save_path: str, enabled: bool = True) -> None:
    self.save_path = save_path
    self.enabled = enabled
    self._fd: int | None = None
    self._created = False

  def __enter__(self) -> Self:
    if not self.enabled:
      return self
    path = self.save_path
    if os.path.exists(path) and not os.path.isdir(path):
      raise ConfigError(f'log.save_path={path} is a file, not a folder; give a folder path')
    self._created = not os.path.exists(path)
    try:
      os.makedirs(path, exist_ok=True)
      fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise ConfigError(f'log.save_path={path} cannot be written ({e.strerror}); give a '
                        'writable folder') from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = os.read(fd, 500).decode(errors='replace').strip() or 'another process'
      os.close(fd)
      raise ConfigError(f'log.save_path={path} is in use by {holder}; wait for that run to '
                        'end or give another log.save_path') from None
    self._fd = fd
    stamp = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'process {os.getpid()} on {socket.gethostname()} (since {stamp})'
              .encode(), 0)
    remove_temporary_files(path)
    return self

  def __exit__(self, *exc: object) -> None:
    if self._fd is None:
      return
    lock_file = os.path.join(self.save_path, LOCK_NAME)
    if self._created and os.listdir(self.save_path) == [LOCK_NAME]:
      os.remove(lock_file)  # nothing else was written: leave no trace
      os.rmdir(self.save_path)
    else:
      os.ftruncate(self._fd, 0)
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None


def remove_temporary_files(path: str) -> list[str]:
  """Deletes the `*.tmp` files that an interrupted atomic write left in the folder (their
  targets are whole: a write reaches its real name only by rename). Needs the lock."""
  stray = sorted(glob.glob(os.path.join(path, '*.tmp')))
  for name in stray:
    os.remove(name)
  if stray:
    logging.warning('removed %d temporary file(s) of an interrupted write: %s', len(stray),
                    ', '.join(os.path.basename(s) for s in stray))
  return stray
