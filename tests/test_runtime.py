"""Process-level CPU settings (vmc/runtime.py): LAPACK threads and malloc's huge pages."""

import os
import subprocess
import sys

import pytest

from vmc import runtime

MADVISE = 'always [madvise] never\n'


@pytest.mark.parametrize('environ, glibc, thp, expected', [
    ({}, 'glibc 2.36', MADVISE, 'glibc.malloc.hugetlb=1'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, 'glibc 2.39', MADVISE,
     'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, 'glibc 2.36', MADVISE, None),  # user's choice
    ({}, 'glibc 2.36', '[always] madvise never\n', None),  # huge pages anyway
    ({}, 'glibc 2.36', 'always madvise [never]\n', None),  # none to be had
    ({}, 'glibc 2.34', MADVISE, None),  # the tunable came in glibc 2.35
    ({}, '', MADVISE, None),  # not glibc
])
def test_huge_pages_are_requested_only_where_they_help_and_the_user_did_not_choose(
    environ, glibc, thp, expected):
  out = runtime.huge_pages_environment({'PATH': '/bin', **environ}, glibc, thp)
  if expected is None:
    assert out is None
  else:
    assert out == {'PATH': '/bin', 'GLIBC_TUNABLES': expected}


def _run(code, **env_changes):
  env = {k: v for k, v in os.environ.items()
         if k not in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'GLIBC_TUNABLES',
                      'VMC_RESTARTED')}
  env.update(env_changes)
  return subprocess.run([sys.executable, '-c', code, 'arg'], env=env, capture_output=True,
                        text=True, check=True).stdout.split()


def _applies() -> bool:
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      thp = f.read()
    glibc = os.confstr('CS_GNU_LIBC_VERSION') or ''
  except (OSError, ValueError, AttributeError):
    return False
  return runtime.huge_pages_environment({}, glibc, thp) is not None


_RESTART = ('import os, sys; from vmc import runtime; print("start", flush=True); '
            'runtime.reexec_with_huge_pages(); print(sys.argv[1], '
            'os.environ.get("GLIBC_TUNABLES"), runtime.describe()["malloc_pages"][:4])')


@pytest.mark.skipif(not _applies(), reason='needs Linux, glibc 2.35+ and THP in madvise mode')
def test_entry_points_restart_once_with_huge_pages_and_keep_their_arguments():
  assert _run(_RESTART) == ['start', 'start', 'arg', 'glibc.malloc.hugetlb=1', 'huge']
  assert _run(_RESTART, GLIBC_TUNABLES='glibc.malloc.hugetlb=0') == [
      'start', 'arg', 'glibc.malloc.hugetlb=0', '4', 'KB']


@pytest.mark.skipif(not _applies(), reason='needs Linux, glibc 2.35+ and THP in madvise mode')
def test_a_restarted_process_never_restarts_again():
  # as if a wrapper or glibc's secure mode had dropped GLIBC_TUNABLES on the way
  assert _run(_RESTART, VMC_RESTARTED='1') == ['start', 'arg', 'None', '4', 'KB']


_OPENBLAS_THREADS = """
import ctypes
import scipy.linalg.cython_lapack  # noqa: F401  (the library jaxlib calls)
import vmc.parallel
from vmc import runtime
paths = {line.split(None, 5)[5].strip() for line in open('/proc/self/maps')
         if 'libscipy_openblas-' in line}
print(ctypes.CDLL(paths.pop()).scipy_openblas_get_num_threads(),
      runtime.describe()['serial_openblas'])
"""


def _scipy_openblas() -> bool:
  import scipy.linalg.cython_lapack  # noqa: F401, PLC0415
  try:
    with open('/proc/self/maps') as maps:
      return any('libscipy_openblas-' in line for line in maps)
  except OSError:
    return False


@pytest.mark.skipif(not _scipy_openblas(), reason="scipy's pip-wheel OpenBLAS not loaded")
@pytest.mark.parametrize('user, expected', [(None, ['1', 'True']), ('2', ['2', 'False'])])
def test_lapack_that_xla_calls_runs_serially_unless_the_user_sets_threads(user, expected):
  out = _run(_OPENBLAS_THREADS, **({'OPENBLAS_NUM_THREADS': user} if user else {}))
  assert out[-2:] == expected
