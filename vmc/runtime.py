"""How this process runs XLA's CPU backend: LAPACK threads and the pages malloc hands out.

Two process-level settings, both measured on 2 cores in docs/benchmarks.md, both leaving
every number vmc computes unchanged (up to float32 round-off in LAPACK):

- `serial_lapack()`: jaxlib's CPU Cholesky, LU and triangular solves (KFAC's factor
  solves, the determinants) call scipy's OpenBLAS from XLA's own thread pool, and OpenBLAS
  then wakes one thread per core of its own, which spin against XLA's. vmc sets that
  OpenBLAS (the copy in scipy's pip wheel) to one thread unless OPENBLAS_NUM_THREADS or
  OMP_NUM_THREADS is set.
- `reexec_with_huge_pages()`: XLA allocates one scratch buffer per executed step (0.9 GB
  for N2's KFAC iteration at batch 256) and returns it afterwards, so every iteration the
  kernel zero-fills it again page by page: 226,000 page faults of 4 KB per N2 iteration.
  Where the kernel gives huge pages only on request (transparent_hugepage = madvise, as on
  Debian and Ubuntu) the `vmc` command restarts itself once with glibc's tunable
  glibc.malloc.hugetlb=1 (glibc 2.35+), which requests 2 MB pages: about 1,000 faults.
  GLIBC_TUNABLES naming glibc.malloc.hugetlb (e.g. =0) keeps the user's choice.

Everything here is Linux- and glibc-specific and does nothing elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

HUGE_PAGES = 'glibc.malloc.hugetlb=1'
_THP = '/sys/kernel/mm/transparent_hugepage/enabled'
_RESTARTED = 'VMC_RESTARTED'
_serial_openblas = False  # whether serial_lapack() set a library to one thread


def serial_lapack() -> None:
  """Run the OpenBLAS that jaxlib's LAPACK kernels call on one thread (see module doc).

  Only scipy's own copy from its pip wheel (libscipy_openblas-*.so), which nothing but
  scipy.linalg and jaxlib calls: numpy's (libscipy_openblas64_) keeps its threads. With
  another LAPACK behind scipy (conda's or the system's OpenBLAS, shared with numpy; MKL)
  nothing changes.
  """
  global _serial_openblas
  if 'OPENBLAS_NUM_THREADS' in os.environ or 'OMP_NUM_THREADS' in os.environ:
    return
  try:
    import scipy.linalg.cython_lapack  # noqa: F401, PLC0415  (loads the library jaxlib calls)
    with open('/proc/self/maps') as maps:  # address perms offset dev inode path (spaces too)
      paths = {fields[5].strip().removesuffix(' (deleted)')
               for fields in (line.split(None, 5) for line in maps)
               if len(fields) == 6 and re.search(r'/libscipy_openblas-[^/]*\.so', fields[5])}
  except (ImportError, OSError):
    return
  for path in sorted(paths):
    try:
      set_threads = ctypes.CDLL(path).scipy_openblas_set_num_threads
    except (OSError, AttributeError):
      continue
    set_threads(1)
    _serial_openblas = True


def huge_pages_environment(environ: dict[str, str], glibc: str, thp: str) -> dict[str, str] | None:
  """The environment to restart with so that malloc uses huge pages, or None to go on as is.

  `glibc` is os.confstr('CS_GNU_LIBC_VERSION') ('glibc 2.36'), `thp` the kernel's
  transparent_hugepage/enabled line ('always [madvise] never').
  """
  tunables = environ.get('GLIBC_TUNABLES', '')
  if 'glibc.malloc.hugetlb' in tunables or '[madvise]' not in thp:
    return None  # the user chose, or the kernel gives huge pages always or never
  version = re.fullmatch(r'glibc (\d+)\.(\d+).*', glibc)
  if not version or (int(version.group(1)), int(version.group(2))) < (2, 35):
    return None  # older glibc ignores the tunable
  return {**environ, 'GLIBC_TUNABLES': ':'.join(filter(None, [tunables, HUGE_PAGES]))}


def _kernel_and_libc() -> tuple[str, str] | None:
  """(glibc version string, transparent_hugepage/enabled line), or None off glibc Linux."""
  try:
    glibc = os.confstr('CS_GNU_LIBC_VERSION') or ''
    with open(_THP) as f:
      return glibc, f.read()
  except (AttributeError, ValueError, OSError):
    return None


def reexec_with_huge_pages() -> None:
  """Restart this program (same interpreter, same arguments) with malloc on huge pages, when
  that applies (see module doc). For the `vmc` command and scripts' `__main__` blocks only,
  first thing: it does not return if it restarts. A restarted process never restarts
  again (VMC_RESTARTED is set), whatever became of GLIBC_TUNABLES on the way."""
  found = _kernel_and_libc()
  if found is None or os.environ.get(_RESTARTED):
    return
  environment = huge_pages_environment(dict(os.environ), *found)
  if environment is None or not sys.executable:
    return
  environment[_RESTARTED] = '1'
  for stream in (sys.stdout, sys.stderr):
    if stream is not None:
      stream.flush()
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
  except OSError:
    return  # go on with 4 KB pages


def malloc_pages() -> str:
  """The pages malloc gets in this process: 'huge (glibc.malloc.hugetlb=1)', 'huge (THP
  always)' or '4 KB'."""
  found = _kernel_and_libc()
  if found is None:
    return '4 KB'
  glibc, thp = found
  if '[always]' in thp:
    return 'huge (THP always)'
  asked = HUGE_PAGES in os.environ.get('GLIBC_TUNABLES', '').split(':')
  if asked and huge_pages_environment({}, glibc, thp) is not None:
    return 'huge (glibc.malloc.hugetlb=1)'
  return '4 KB'


def describe() -> dict[str, str | bool]:
  """What applies in this process (for logs and provenance records)."""
  return {'malloc_pages': malloc_pages(), 'serial_openblas': _serial_openblas}
