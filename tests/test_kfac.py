"""KFAC as the iteration runs it: one compiled call, compiled once, and the same training
trajectory as kfac-jax's own inverse-based step (docs/benchmarks.md).

The reference numbers are those of the tiny fixed-seed runs below at commit 5fc3f50, where
kfac-jax inverted its damped Kronecker factors (LU) in its own pmapped step, with copies
of parameters and optimizer state around it. Cholesky solves and the fused call change
the update only by float32 round-off: after 8 steps the energies agree to about 2e-5 Ha
(they move by 0.1-0.5 Ha from step to step) and the parameters' sum of squares to 1e-8
relative; a preconditioner off by even 1e-3 would move both far more.
"""

import os
import subprocess
import sys

import jax
import jax.monitoring
import numpy as np
import pytest

from conftest import requires_kfac, tiny_config
from vmc import config as config_lib, iteration, parallel
from vmc.errors import ConfigError
from vmc.optimizers import kfac_support

BEFORE = {  # He, tiny_config, PRNGKey(3): energies per step, sum of squared parameters
    'default': ([-0.25231778621673584, 0.010119318962097168, 0.5744701623916626,
                 0.14921210706233978, -0.10034464299678802, 0.381075918674469,
                 -0.2594960331916809, 0.334368497133255], 61.4800691398394),
    'cached': ([-0.25231778621673584, 0.010120093822479248, 0.8367786407470703,
                0.3087211847305298, 0.36017948389053345, 0.31730344891548157],
               61.40004104572294),
}
CACHED = {'optim.kfac.invert_every': 2, 'optim.kfac.cov_update_every': 2}


def _run(steps, compiles=None, **overrides):
  spec = config_lib.resolve(tiny_config('He', 'kfac', **overrides))
  model = iteration.build(spec)
  state = iteration.with_opt_state(
      iteration.init_state(spec, model, jax.random.PRNGKey(3)), model)
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
  norm = sum(float(np.sum(np.asarray(a, np.float64) ** 2))
             for a in jax.tree_util.tree_leaves(params))
  return energies, norm


@requires_kfac()
def test_the_kfac_iteration_compiles_once_and_keeps_kfac_jax_s_trajectory():
  compiles = []
  energies, norm = _run(8, compiles)
  assert any(t == 0 for t, _ in compiles)  # the listener sees the first one
  assert [event for t, event in compiles if t > 0] == []
  expected, expected_norm = BEFORE['default']
  np.testing.assert_allclose(energies, expected, rtol=0, atol=2e-4)
  np.testing.assert_allclose(norm, expected_norm, rtol=1e-6)


@requires_kfac()
def test_cached_curvature_and_inverses_keep_kfac_jax_s_trajectory():
  # invert_every > 1: the Cholesky factors are cached; cov_update_every > 1: the curvature
  # update is a branch on kfac-jax's step counter inside the compiled iteration.
  energies, norm = _run(6, **CACHED)
  expected, expected_norm = BEFORE['cached']
  np.testing.assert_allclose(energies, expected, rtol=0, atol=2e-4)
  np.testing.assert_allclose(norm, expected_norm, rtol=1e-6)
  # and it is not the every-step trajectory
  assert abs(energies[2] - BEFORE['default'][0][2]) > 0.1


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
