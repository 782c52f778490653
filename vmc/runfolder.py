"""The run folder: one process at a time, and no stray temporary files.

A run holds an exclusive lock on `<save_path>/.vmc.lock` for its whole life (process 0
of a multi-process run). The lock is `flock(2)`: the kernel releases it when the process
ends in any way, kill -9 included, so a lock left by a dead process is stale by
construction and the next run simply takes it; the file's text (host, pid, start time)
only serves the error message of a second run that finds the lock held. Linux emulates
flock over NFS with byte-range locks, so the lock also holds across the nodes of a
cluster that share the folder; on a filesystem without locks the run warns and goes on.

A folder that the lock created and that nothing else was written into is removed again
when the run ends (e.g. on a failed SCF), so a run that fails before its first output
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import glob
import os
import socket
import zipfile
from collections.abc import Iterator
from typing import Self

from absl import logging

from vmc import checkpoint, parallel
from vmc.errors import ConfigError, one_line

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
    except OSError as e:
      raise ConfigError(f'log.save_path={path} cannot be created ({e.strerror}); give a '
                        'writable folder') from None
    self._fd = _lock(path)
    stamp = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')
    with contextlib.suppress(OSError):  # the holder's name only serves messages
      os.ftruncate(self._fd, 0)
      os.pwrite(self._fd, f'process {os.getpid()} on {socket.gethostname()} (since {stamp})'
                .encode(), 0)
    try:
      remove_temporary_files(path)
    except OSError as e:
      logging.warning('could not remove temporary files in %s (%s)', path, e.strerror)
    return self

  def __exit__(self, *exc: object) -> None:
    if self._fd is None:
      return
    try:
      with contextlib.suppress(OSError):
        if self._created and os.listdir(self.save_path) == [LOCK_NAME]:
          os.remove(os.path.join(self.save_path, LOCK_NAME))  # nothing else was written
          os.rmdir(self.save_path)
        else:
          os.ftruncate(self._fd, 0)
    finally:
      os.close(self._fd)  # releases the lock
      self._fd = None


# flock errors that mean "this filesystem has no locks" (e.g. Lustre mounted noflock).
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def _lock(path: str) -> int:
  """An open descriptor of path/LOCK_NAME holding its exclusive flock."""
  lock_file = os.path.join(path, LOCK_NAME)
  for _ in range(10):
    try:
      fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise ConfigError(f'log.save_path={path} cannot be written ({e.strerror}); give a '
                        'writable folder') from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 500).decode(errors='replace').strip() or 'another process'
      os.close(fd)
      raise ConfigError(f'log.save_path={path} is in use by {holder}; wait for that run to '
                        'end or give another log.save_path') from None
    except OSError as e:
      if e.errno not in _NO_LOCKS:
        os.close(fd)
        raise ConfigError(f'log.save_path={path} cannot be locked ({e.strerror}); give '
                          'another log.save_path') from None
      logging.warning('cannot lock %s (%s): running without the lock; make sure that no '
                      'other run uses this folder', path, e.strerror)
      return fd
    try:  # the file locked must still be the one at its name (not removed meanwhile)
      if os.fstat(fd).st_ino == os.stat(lock_file).st_ino:
        return fd
    except FileNotFoundError:
      pass
    os.close(fd)
  raise ConfigError(f'log.save_path={path}: its lock file keeps changing; is another run '
                    'starting there? Give another log.save_path')


@contextlib.contextmanager
def locked(save_path: str) -> Iterator[None]:
  """The run folder's lock (RunFolderLock) on process 0, for every process."""
  lock = RunFolderLock(save_path, enabled=parallel.is_main())
  parallel.on_main(lambda: lock.__enter__() and None)
  try:
    yield
  finally:
    lock.__exit__()


# Errors of a side file that is damaged rather than unwritable (np.load of a cut npz, h5py
# of a garbled file, json of a truncated record).
DAMAGED = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def set_aside(path: str, consequence: str) -> None:
  """Renames a damaged file that vmc reads back to <path>.corrupt (kept for inspection,
  never read again) and says what follows from it."""
  os.replace(path, path + '.corrupt')
  logging.warning('%s is damaged: set aside as %s.corrupt; %s', path,
                  os.path.basename(path), consequence)


def write_failure(error: OSError, save_path: str) -> str:
  """The line for a file operation that failed during a run: what, what is safe, and the
  fix that fits the error (free space only for a full disk)."""
  what = f'{error.strerror or error} ({error.filename})' if error.filename else str(error)
  if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
    fix = 'free space'
  elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    fix = 'make the folder writable'
  else:
    fix = 'fix or remove the file named'
  newest = _newest_checkpoint(save_path)
  safe = (f'{newest} and the statistics before it are kept; {fix} and run the same command '
          'again to continue from it' if newest else
          f'no checkpoint was written yet: {fix}, and the next run starts this one again')
  return f'a file operation in {save_path} failed: {what}; {safe}'


def _newest_checkpoint(save_path: str) -> str:
  """'the newest checkpoint, PATH (step N), is whole', or '' if the folder has none."""
  found = checkpoint.list_checkpoints(save_path) if os.path.isdir(save_path) else []
  return (f'the newest checkpoint, {found[-1][1]} (step {found[-1][0]}), is whole' if found
          else '')


def is_out_of_memory(error: Exception) -> bool:
  """Whether an error of XLA's is a failed allocation: RESOURCE_EXHAUSTED from a device,
  or an INTERNAL 'Out of memory allocating ...' from the CPU client."""
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def out_of_memory(error: Exception, batch_size: int, save_path: str) -> str:
  """The line for a device that ran out of memory: the sizes that decide it and what is
  safe on disk."""
  safe = _newest_checkpoint(save_path) or 'no checkpoint was written yet'
  return (f'out of memory ({one_line(error)[:160]}) with batch_size={batch_size} on '
          f'{parallel.global_device_count()} device(s); lower batch_size (it may be '
          'changed on resume), set optim.local_energy_chunk_size, or use more devices; '
          f'{safe}')


def remove_temporary_files(path: str) -> list[str]:
  """Deletes the `*.tmp` files that an interrupted atomic write left in the folder (their
  targets are whole: a write reaches its real name only by rename). Needs the lock."""
  stray = sorted(glob.glob(os.path.join(path, '*.tmp')))
  for name in stray:
    with contextlib.suppress(FileNotFoundError):
      os.remove(name)
  if stray:
    logging.warning('removed %d temporary file(s) of an interrupted write: %s', len(stray),
                    ', '.join(os.path.basename(s) for s in stray))
  return stray
