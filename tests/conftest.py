"""Shared fixtures: tiny configs so the whole suite stays within minutes on 2 cores."""

import functools
import importlib.metadata
import os
import tempfile

# How the suite compiles (docs/testing.md, "Compilation"): its programs are tiny and run
# for milliseconds, so XLA's optimizations cost far more than they save (the KFAC
# iteration of tiny_config: 5.0 s to compile at the defaults, 1.3 s with these). Results
# change by float32 round-off only, which every tolerance in the suite must allow anyway:
# another CPU compiles other code too. Set before JAX starts, so that the runs the tests
# start as subprocesses inherit them. VMC_TEST_FULL_OPTIMIZATION=1 keeps JAX's defaults
# (CI's second stack runs its subset so). `vmc` itself never sees these settings.
QUICK_XLA_FLAGS = '--xla_cpu_use_fusion_emitters=false'
FULL_OPTIMIZATION = os.environ.get('VMC_TEST_FULL_OPTIMIZATION', '') not in ('', '0')


def _xla_knows_quick_flags() -> bool:
  """Whether the installed jaxlib's XLA has QUICK_XLA_FLAGS: jaxlib 0.9 (stack 1) has;
  0.12 (stack 2) aborts at start on an unknown flag, so it gets only the JAX setting."""
  try:
    version = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return False
  return tuple(int(part) for part in version.split('.')[:2]) <= (0, 9)


if not FULL_OPTIMIZATION:
  os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
  if _xla_knows_quick_flags() and QUICK_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {QUICK_XLA_FLAGS}'.strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from vmc import config as config_lib, runtime  # noqa: E402
from vmc.optimizers import kfac_support  # noqa: E402


@functools.cache
def kfac_problem():
  """Why KFAC cannot run on this stack, or None (vmc/optimizers/kfac_support.py: kfac-jax
  0.0.8 runs on jax <= 0.9.1 only). Where it cannot, tests of KFAC itself are skipped with
  the reason (`requires_kfac`), and tests that only need some optimizer to train with take
  SPRING (`trainer`): the rest of the run is tested on every stack. Asked after
  pytest_configure, so that the persistent compilation cache is set up first."""
  return kfac_support.problem()


def requires_kfac():
  problem = kfac_problem()
  return pytest.mark.skipif(problem is not None, reason=f'KFAC cannot run here: {problem}')


def trainer():
  return 'kfac' if kfac_problem() is None else 'spring'


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a subprocess with `devices` virtual CPU devices, the suite's own kept."""
  own = os.environ.get('XLA_FLAGS', '')
  return f'{own} --xla_force_host_platform_device_count={devices}'.strip()


def pytest_configure(config):
  """JAX's persistent compilation cache: the tests build the same tiny networks again and
  again (and both xdist workers build the same ones), so most compilations become cache
  hits. The cache is keyed by the compiled program and JAX's version; a result is the same
  with or without it. Only for the pytest processes (a hook, so not for the runs that tests
  start as subprocesses and that import this module: they would log a warning for every
  executable loaded from the cache, and could fill their stderr pipes)."""
  del config
  jax.config.update('jax_disable_most_optimizations', not FULL_OPTIMIZATION)
  jax.config.update('jax_compilation_cache_dir', os.environ.get(
      'VMC_TEST_JAX_CACHE', os.path.join(tempfile.gettempdir(), 'vmc-tests-jax-cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  runtime.configure()  # the process settings of a run, as every run applies them


def slow_after_first(cases, ids=None):
  """Parametrize cases with all but the first marked slow: `pytest -m "not slow"` keeps one
  representative of a long parametrized test."""
  ids = ids or [None] * len(cases)
  return [pytest.param(*(c if isinstance(c, tuple) else (c,)), id=i,
                       marks=() if n == 0 else pytest.mark.slow)
          for n, (c, i) in enumerate(zip(cases, ids, strict=True))]


def tiny_config(atom='He', optimizer=None, **overrides):
  cfg = config_lib.default()
  cfg.system.atom = atom
  cfg.batch_size = 64
  cfg.network.determinants = 2
  cfg.network.ferminet.hidden_dims = ((16, 4), (16, 4))
  cfg.optim.optimizer = optimizer or trainer()
  cfg.optim.iterations = 10
  cfg.mcmc.burn_in = 10
  cfg.mcmc.steps = 5
  cfg.pretrain.method = 'none'  # tests that need it turn it on
  cfg.pretrain.iterations = 100
  cfg.debug.deterministic = True
  cfg.log.print_every_seconds = 1000.0
  return override(cfg, **overrides)


def budgeted_config(save_path, minutes=1.0, **overrides):
  """A tiny Adam run with a wall-clock budget (tests/test_budget.py), half of it for the
  evaluation."""
  return tiny_config(**{'optim.optimizer': 'adam', 'optim.iterations': 1_000_000,
                        'budget_minutes': minutes, 'budget_evaluation': 0.5,
                        'log.save_path': save_path, **overrides})


class TickingClock:
  """vmc.clock.now for a test: `tick` seconds later at every read, so that a budgeted run's
  shares, iterations and rates are the same on any machine at any speed."""

  def __init__(self, tick):
    self.tick, self.t = tick, 1.8e9

  def __call__(self):
    self.t += self.tick
    return self.t


def override(cfg, **overrides):
  """cfg with dotted keys set: override(cfg, **{'mcmc.steps': 3})."""
  for key, value in overrides.items():
    node = cfg
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return cfg


@pytest.fixture
def make_tiny_config():
  return tiny_config


# Every network option, tiny: (name, config overrides). Tests of antisymmetry, Laplacians
# and training run over these.
TINY_PSIFORMER = {'network.network_type': 'psiformer', 'network.psiformer.num_layers': 2,
                  'network.psiformer.num_heads': 2, 'network.psiformer.heads_dim': 4,
                  'network.psiformer.mlp_hidden_dims': (8,)}
NETWORK_VARIANTS = [
    ('ferminet', {}),
    ('ferminet_shared_isotropic_jastrow', {'network.envelope_shared': True,
                                           'network.jastrow': 'simple_ee'}),
    ('ferminet_diagonal', {'network.envelope_type': 'diagonal'}),
    ('ferminet_shared_diagonal', {'network.envelope_type': 'diagonal',
                                  'network.envelope_shared': True}),
    ('psiformer', TINY_PSIFORMER),
    ('psiformer_diagonal_no_norm_raw_inputs', {
        **TINY_PSIFORMER, 'network.envelope_type': 'diagonal', 'network.jastrow': 'none',
        'network.psiformer.use_layer_norm': False, 'network.psiformer.rescale_inputs': False}),
]


def make_network(system, cfg):
  """The network a config specifies, for `system` (which may differ from the config's)."""
  from vmc import networks
  return networks.make_network(system, config_lib.resolve(cfg).network)
