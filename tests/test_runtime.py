"""Process settings of a run (vmc/runtime.py): pmap, LAPACK threads, malloc's huge pages; none
at import."""

import json
import os
import subprocess
import sys

import jax
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
                      'VMC_RESTARTED', 'JAX_PLATFORMS', *runtime.OFF.values())}
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


@pytest.mark.slow
@pytest.mark.skipif(not _applies(), reason='needs Linux, glibc 2.35+ and THP in madvise mode')
def test_entry_points_restart_once_with_huge_pages_and_keep_their_arguments():
  assert _run(_RESTART, JAX_PLATFORMS='cpu') == [
      'start', 'start', 'arg', 'glibc.malloc.hugetlb=1', 'huge']
  assert _run(_RESTART, JAX_PLATFORMS='cpu', GLIBC_TUNABLES='glibc.malloc.hugetlb=0') == [
      'start', 'arg', 'glibc.malloc.hugetlb=0', '4', 'KB']


@pytest.mark.slow
@pytest.mark.skipif(not _applies(), reason='needs Linux, glibc 2.35+ and THP in madvise mode')
@pytest.mark.parametrize('env', [
    {'VMC_RESTARTED': '1'},  # as if a wrapper had dropped GLIBC_TUNABLES on the way
    {'VMC_HUGE_PAGES': '0'},  # the user's switch
    {'JAX_PLATFORMS': 'cuda'},  # a GPU job: nothing CPU-specific, no restart
], ids=['restarted', 'turned_off', 'gpu'])
def test_no_restart_when_restarted_turned_off_or_on_an_accelerator(env):
  assert _run(_RESTART, **env) == ['start', 'arg', 'None', '4', 'KB']


@pytest.mark.parametrize('environ, plugins, expected', [
    ({'JAX_PLATFORMS': 'cpu'}, True, False),
    ({'JAX_PLATFORMS': 'cuda'}, False, True),
    ({'JAX_PLATFORMS': 'cuda,cpu'}, True, True),
    ({'JAX_PLATFORMS': 'cuda,cpu'}, False, False),
    ({}, True, True),
    ({}, False, False),
])
def test_an_accelerator_is_possible_when_a_plugin_is_installed_and_jax_may_use_it(
    monkeypatch, environ, plugins, expected):
  monkeypatch.setattr(runtime.importlib.metadata, 'entry_points',
                      lambda group: ['xla_cuda13'] if plugins else [])
  monkeypatch.setattr(runtime.importlib.util, 'find_spec', lambda name: None)
  assert runtime.accelerator_possible(environ) is expected


def _scipy_openblas() -> bool:
  import scipy.linalg.cython_lapack  # noqa: F401, PLC0415
  try:
    with open('/proc/self/maps') as maps:
      return any('libscipy_openblas-' in line for line in maps)
  except OSError:
    return False


# What importing vmc must leave alone (nothing until a run asks), and what configure() does.
_STATE = """
import json, os, sys
import scipy.linalg.cython_lapack  # noqa: F401  (the library jaxlib's LAPACK calls)
import jax, threadpoolctl

def state():
  return (dict(jax.config.values), [(i['filepath'], i['num_threads'])
                                    for i in threadpoolctl.threadpool_info()])

before = state()
import vmc, vmc.parallel, vmc.train, vmc.cli, vmc.iteration, vmc.networks, vmc.optimizers
import vmc.optimizers.sr, vmc.optimizers.adam, vmc.pretrain
from vmc import runtime
imported = state()
report = runtime.configure() if sys.argv[1] == 'configure' else {}
configured = state()
changed = sorted(k for k in before[0] if before[0][k] != configured[0].get(k))
threads = {path.rsplit('/', 1)[-1].split('-')[0]: n for path, n in configured[1]}
print(json.dumps(dict(import_changes=imported != before, changed=changed,
                      threads=threads, report=report)))
"""


def _state(mode, **env):
  out = _run(_STATE.replace('sys.argv[1]', repr(mode)), JAX_PLATFORMS='cpu', **env)
  return json.loads(' '.join(out))


def test_importing_vmc_changes_no_jax_flag_and_no_blas_threads():
  out = _state('import')
  assert out['import_changes'] is False
  assert out['changed'] == []


def _has_pmap_flag():
  return 'jax_pmap_shmap_merge' in jax.config.values


@pytest.mark.skipif(not _scipy_openblas(), reason="scipy's pip-wheel OpenBLAS not loaded")
def test_configure_applies_the_run_settings_and_says_so():
  out = _state('configure')
  assert out['changed'] == (['jax_pmap_shmap_merge'] if _has_pmap_flag() else [])
  assert out['threads']['libscipy_openblas'] == 1  # the copy jaxlib calls
  assert out['threads']['libscipy_openblas64_'] != 1 or os.cpu_count() == 1  # numpy's
  assert out['report']['lapack'] == "scipy's OpenBLAS on one thread"
  assert out['report']['pmap'].startswith('classic' if _has_pmap_flag() else 'on shard_map')


@pytest.mark.skipif(not _scipy_openblas(), reason="scipy's pip-wheel OpenBLAS not loaded")
@pytest.mark.parametrize('env, lapack', [
    ({'VMC_SERIAL_LAPACK': '0', 'VMC_CLASSIC_PMAP': '0'}, 'VMC_SERIAL_LAPACK=0'),
    ({'OPENBLAS_NUM_THREADS': '2'}, 'OPENBLAS_NUM_THREADS=2'),
])
def test_each_run_setting_can_be_turned_off(env, lapack):
  out = _state('configure', **env)
  assert lapack in out['report']['lapack']
  n = out['threads']['libscipy_openblas']  # OpenBLAS's own default: one per core
  assert n == 2 if 'OPENBLAS_NUM_THREADS' in env else (n > 1 or os.cpu_count() == 1)
  if 'VMC_CLASSIC_PMAP' in env:
    assert out['changed'] == []
    assert out['report']['pmap'].startswith('as JAX sets it' if _has_pmap_flag() else
                                            'on shard_map')


def test_on_an_accelerator_the_cpu_settings_are_not_applied(monkeypatch):
  monkeypatch.setattr(runtime, '_applied', {})
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(runtime, 'serial_lapack', lambda: pytest.fail('applied on a GPU'))
  report = runtime.configure()
  assert report['lapack'] == 'not applied (backend gpu)'
  assert runtime.configure() == report  # a second call only reports
