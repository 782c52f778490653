"""How a vmc run sets up its process: applied when a run asks (`configure()`), never at import.

Importing vmc changes nothing in the process. A run (`vmc.train.run`, the benchmark's
cases) calls `configure()` once it knows its devices; it applies three settings, logs what
each came to, and records them in summary.json's provenance. Each has an environment
variable that turns it off (=0), and each leaves every number vmc computes unchanged up to
float32 round-off (docs/benchmarks.md has the measurements):

- Classic pmap (`VMC_CLASSIC_PMAP`). JAX 0.9 implements `jax.pmap` in two ways, chosen by
  the process-wide flag jax_pmap_shmap_merge; kfac-jax 0.0.8 turns it off (classic pmap)
  when it is imported. vmc turns it off too, before anything is compiled, so that every
  run (kfac, spring, adam or none) compiles its iteration the same way. JAX 0.10 and
  newer have one pmap only (on shard_map) and no flag: nothing to do.
- LAPACK on one thread (`VMC_SERIAL_LAPACK`; CPU backend only). jaxlib's CPU Cholesky, LU
  and triangular solves (KFAC's factor solves, the determinants) call the OpenBLAS of
  scipy's pip wheel from XLA's own thread pool, and OpenBLAS then wakes one thread per
  core of its own, which spin against XLA's. vmc sets that copy (libscipy_openblas-*.so,
  through threadpoolctl) to one thread; numpy's copy (libscipy_openblas64_) keeps its
  threads. OPENBLAS_NUM_THREADS or OMP_NUM_THREADS set by the user win.
- Huge pages (`VMC_HUGE_PAGES`; CPU only, entry points only). XLA allocates one scratch
  buffer per executed step (0.9 GB for N2's KFAC iteration at batch 256) and returns it
  afterwards, so every iteration the kernel zero-fills it again page by page (226,000
  page faults of 4 KB per N2 iteration). Where the kernel gives huge pages only on request
  (transparent_hugepage = madvise, as on Debian and Ubuntu) the `vmc` command and the
  scripts' entry points restart themselves once, first thing, with glibc's tunable
  glibc.malloc.hugetlb=1 (glibc 2.35+): about 1,000 faults. Never where an accelerator
  plugin of JAX is installed (unless JAX_PLATFORMS=cpu), never twice (VMC_RESTARTED), and
  GLIBC_TUNABLES naming glibc.malloc.hugetlb (e.g. =0) keeps the user's choice.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
import warnings

HUGE_PAGES = 'glibc.malloc.hugetlb=1'
OFF = {'pmap': 'VMC_CLASSIC_PMAP', 'lapack': 'VMC_SERIAL_LAPACK',
       'huge_pages': 'VMC_HUGE_PAGES'}  # setting -> the environment variable that turns it off
_THP = '/sys/kernel/mm/transparent_hugepage/enabled'
_RESTARTED = 'VMC_RESTARTED'
_SCIPY_OPENBLAS = re.compile(r'/libscipy_openblas-[^/]*\.so')
_applied: dict[str, str] = {}  # what configure() did, for describe()


def _turned_off(setting: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
  return environ.get(OFF[setting], '').strip().lower() in ('0', 'false', 'no', 'off')


def configure() -> dict[str, str]:
  """Applies this module's settings for a run (see the module doc); a second call only
  reports. Call it after jax.distributed is initialized and before anything is compiled.
  Returns what each setting came to, as `describe()` does."""
  if not _applied:
    import jax  # noqa: PLC0415  (this module is imported by the entry points before JAX)
    _applied['pmap'] = _classic_pmap(jax)
    backend = jax.default_backend()
    _applied['lapack'] = (serial_lapack() if backend == 'cpu' else
                          f'not applied (backend {backend})')
  return describe()


def _classic_pmap(jax: object) -> str:
  config = jax.config  # type: ignore[attr-defined]
  if 'jax_pmap_shmap_merge' not in config.values:
    return 'on shard_map (the only pmap of this jax)'
  if _turned_off('pmap'):
    merged = config.values['jax_pmap_shmap_merge']
    return f'as JAX sets it ({OFF["pmap"]}=0; jax_pmap_shmap_merge={merged})'
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    config.update('jax_pmap_shmap_merge', False)
  return 'classic (jax_pmap_shmap_merge=False)'


def serial_lapack() -> str:
  """Sets the OpenBLAS that jaxlib's LAPACK kernels call to one thread (see module doc);
  says what it did. Only scipy's own copy from its pip wheel, which nothing but
  scipy.linalg and jaxlib calls; with another LAPACK behind scipy (conda's or the
  system's OpenBLAS, shared with numpy; MKL) nothing changes."""
  if _turned_off('lapack'):
    return f'as the environment sets it ({OFF["lapack"]}=0)'
  for name in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS'):
    if name in os.environ:
      return f'as the environment sets it ({name}={os.environ[name]})'
  try:
    import scipy.linalg.cython_lapack  # noqa: F401, PLC0415  (loads the library jaxlib calls)
    import threadpoolctl  # noqa: PLC0415
  except ImportError:
    return 'as the environment sets it (no scipy or threadpoolctl)'
  controller = threadpoolctl.ThreadpoolController()
  paths = sorted({lib.filepath for lib in controller.lib_controllers
                  if _SCIPY_OPENBLAS.search(lib.filepath or '')})
  if not paths:
    return "as the environment sets it (no pip-wheel scipy OpenBLAS)"
  controller.select(filepath=paths).limit(limits=1)
  return "scipy's OpenBLAS on one thread"


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


def accelerator_possible(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
  """Whether JAX may run this process on an accelerator, known without starting JAX: an
  accelerator plugin is installed (CUDA, ROCm: the `jax_plugins` entry points or
  namespace package; TPU: libtpu) and JAX_PLATFORMS does not restrict JAX to the CPU."""
  platforms = environ.get('JAX_PLATFORMS', environ.get('JAX_PLATFORM_NAME', '')).strip()
  if platforms and {p.strip() for p in platforms.lower().split(',')} <= {'cpu'}:
    return False
  if platforms and 'cpu' not in platforms.lower():
    return True
  return bool(importlib.metadata.entry_points(group='jax_plugins')) or any(
      importlib.util.find_spec(name) is not None for name in ('jax_plugins', 'libtpu'))


def reexec_with_huge_pages() -> None:
  """Restart this program (same interpreter, same arguments) with malloc on huge pages, when
  that applies (see module doc). For the `vmc` command and scripts' `__main__` blocks only,
  first thing: it does not return if it restarts. A restarted process never restarts
  again (VMC_RESTARTED is set), whatever became of GLIBC_TUNABLES on the way."""
  if os.environ.get(_RESTARTED) or _turned_off('huge_pages') or accelerator_possible():
    return
  found = _kernel_and_libc()
  if found is None:
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


def describe() -> dict[str, str]:
  """What applies in this process (for logs and provenance records): the pmap, the LAPACK
  threads ('not configured' before configure()) and malloc's pages."""
  return {'pmap': _applied.get('pmap', 'not configured'),
          'lapack': _applied.get('lapack', 'not configured'),
          'malloc_pages': malloc_pages()}


def log_line() -> str:
  d = describe()
  return (f"runtime (vmc/runtime.py): pmap {d['pmap']}; LAPACK {d['lapack']}; malloc pages "
          f"{d['malloc_pages']}")
