"""KFAC as the iteration runs it: one compiled call, compiled once, and the same training
trajectory as kfac-jax's own inverse-based blocks (docs/benchmarks.md).

vmc's dense blocks solve with Cholesky factors of the damped Kronecker factors where
kfac-jax multiplies by their inverses (LU). In exact arithmetic the two give the same
update, so the reference is computed here, in the same process: the same run with
kfac-jax's own block classes, both in float64. Round-off then is about 1e-16 relative per
operation; a tiny run's trajectory amplifies it by at most a few orders of magnitude over
8 steps (measured: 1e-13 to 3e-13 Ha), while a preconditioner off by even 1e-6 would move
the energies by far more than the 1e-9 Ha allowed. float32 runs are not compared step by
step: their round-off depends on the CPU's instruction set, and a chaotic trajectory
turns it into differences of 1e-3 Ha within six steps on some machines.
"""

import os
import subprocess
import sys

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import requires_kfac, tiny_config
from vmc import config as config_lib, iteration, parallel
from vmc.errors import ConfigError
from vmc.optimizers import kfac_support

CACHED = {'optim.kfac.invert_every': 2, 'optim.kfac.cov_update_every': 2}
TOLERANCE_HA = 1e-9  # float64 round-off amplified over 8 steps is about 1e-13 Ha


def _run(steps, compiles=None, x64=False, kfac_jax_blocks=False, **overrides):
  """Energies per step and the parameters' sum of squares of a tiny fixed-seed He run;
  with kfac_jax_blocks, kfac-jax's own inverse-based dense blocks instead of vmc's."""
  from vmc.optimizers import kfac  # imported only where kfac-jax runs
  import kfac_jax
  own = {'CholeskyDense': kfac_jax.DenseTwoKroneckerFactored,
         'CholeskyRepeatedDense': kfac_jax.RepeatedDenseKroneckerFactored}
  saved = {name: getattr(kfac, name) for name in own}
  try:
    if kfac_jax_blocks:
      for name, block in own.items():
        setattr(kfac, name, block)
    with jax.enable_x64(x64):
      return _steps(steps, compiles, x64, overrides)
  finally:
    for name, block in saved.items():
      setattr(kfac, name, block)


def _steps(steps, compiles, x64, overrides):
  spec = config_lib.resolve(tiny_config('He', 'kfac', **overrides))
  model = iteration.build(spec)
  state = iteration.init_state(spec, model, jax.random.PRNGKey(3))
  if x64:
    state = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, state)
  state = iteration.with_opt_state(state, model)
  energies: list[float] = []

  def listen(event, _, **kwargs):  # (iteration index, event) of every tracing or compile
    if compiles is not None and event.startswith('/jax/core/compile/'):
      compiles.append((len(energies), event))

  jax.monitoring.register_event_duration_secs_listener(listen)
  for _ in range(steps):
    state, stats = model.iteration.step(state)
    energies.append(float(parallel.first(stats.energy)))
  jax.monitoring.unregister_event_duration_listener(listen)
  params = parallel.first(state.params)
  assert jax.tree_util.tree_leaves(params)[0].dtype == (np.float64 if x64 else np.float32)
  norm = sum(float(np.sum(np.asarray(a, np.float64) ** 2))
             for a in jax.tree_util.tree_leaves(params))
  return np.array(energies), norm


@requires_kfac()
def test_the_kfac_iteration_compiles_once():
  compiles = []
  energies, _ = _run(4, compiles)
  assert any(t == 0 for t, _ in compiles)  # the listener sees the first one
  assert [event for t, event in compiles if t > 0] == []
  assert np.all(np.isfinite(energies))


@requires_kfac()
@pytest.mark.parametrize('overrides', [{}, CACHED], ids=['every_step', 'cached'])
def test_cholesky_solves_keep_kfac_jax_s_trajectory(overrides):
  """cached: invert_every > 1 caches the Cholesky factors; cov_update_every > 1 makes the
  curvature update a branch on kfac-jax's step counter inside the compiled iteration."""
  energies, norm = _run(8, x64=True, **overrides)
  expected, expected_norm = _run(8, x64=True, kfac_jax_blocks=True, **overrides)
  np.testing.assert_allclose(energies, expected, rtol=0, atol=TOLERANCE_HA)
  np.testing.assert_allclose(norm, expected_norm, rtol=TOLERANCE_HA)
  assert np.ptp(energies) > 0.1  # the energies move by far more than the tolerance


@requires_kfac()
def test_cached_curvature_is_not_the_every_step_trajectory():
  every, _ = _run(3, x64=True)
  cached, _ = _run(3, x64=True, **CACHED)
  assert abs(every[1] - cached[1]) < TOLERANCE_HA  # the first update is the same ...
  assert abs(every[2] - cached[2]) > 0.1  # ... the second uses the cached curvature


# ----------------------------------------------------------------------------------------
# Which kfac-jax runs on which JAX (vmc/optimizers/kfac_support.py).


def test_the_supported_pair_passes_the_check():
  """kfac-jax 0.0.8 on jax 0.9.1 (constraints.txt) must run; elsewhere the check decides
  (the CLI test below holds either answer to its word)."""
  if jax.__version_info__[:3] <= (0, 9, 1):
    assert kfac_support.problem() is None
    kfac_support.check()


def test_an_incompatible_graph_evaluator_is_one_line_naming_the_ways_out(monkeypatch):
  try:
    from kfac_jax._src import tag_graph_matcher
  except AttributeError:  # kfac-jax 0.0.8 on jax >= 0.11: fails at import, as reported
    reason = kfac_support.problem()
    assert reason is not None and 'fails at import on this JAX' in reason
  else:  # as kfac-jax 0.0.8 breaks on jax 0.9.2 and 0.10 (two values unpacked from one)
    def unpack_two(eqn, values):
      raise ValueError('not enough values to unpack (expected 2, got 0)')
    monkeypatch.setattr(tag_graph_matcher, 'eval_jaxpr_eqn', unpack_two)
    assert 'graph evaluator fails' in kfac_support.problem()
    monkeypatch.setattr(tag_graph_matcher, 'eval_jaxpr_eqn', lambda eqn, values: [3.0])
    assert 'does not reproduce x + y' in kfac_support.problem()
  monkeypatch.setattr(kfac_support, 'problem', lambda: 'because')
  with pytest.raises(ConfigError) as error:
    kfac_support.check()
  message = str(error.value)
  assert '\n' not in message and 'because' in message and f'jax {jax.__version__}' in message
  for way_out in ('--config.optim.optimizer=spring', kfac_support.INSTALL_DEVELOPMENT,
                  'constraints.txt'):
    assert way_out in message


@pytest.mark.slow
def test_a_kfac_run_either_runs_or_stops_at_once_with_one_line(tmp_path):
  """On this stack: if the check passes, a KFAC run trains; if not, `vmc` says so in one line,
  exit 2, before it writes anything."""
  out = tmp_path / 'run'
  args = [sys.executable, '-m', 'vmc', '--config.optim.optimizer=kfac',
          '--config.batch_size=32', '--config.optim.iterations=2', '--config.mcmc.burn_in=1',
          '--config.pretrain.method=none', '--config.network.determinants=1',
          '--config.network.ferminet.hidden_dims=((8, 4),)', f'--config.log.save_path={out}']
  proc = subprocess.run(args, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  if kfac_support.problem() is None:
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'step 2/2' in proc.stderr
  else:
    assert proc.returncode == 2
    errors = [l for l in proc.stderr.splitlines() if l.startswith('vmc: error:')]
    assert len(errors) == 1 and 'optimizer=spring' in errors[0], proc.stderr[-2000:]
    assert not out.exists()
