"""MinSR and SPRING (vmc.optimizers.sr): known answers in float64, devices, state, training.

The float64 and two-device cases run in one subprocess (tests/sr_reference.py: x64 and
virtual devices must be set before JAX starts); each test below checks one of its results.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import xla_flags
from vmc import config as config_lib, iteration, parallel, start, train

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sr_reference.py')


@pytest.fixture(scope='module')
def ref(tmp_path_factory):
  out = tmp_path_factory.mktemp('sr') / 'reference.npz'
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_ENABLE_X64='1', XLA_FLAGS=xla_flags(2))
  proc = subprocess.run([sys.executable, REFERENCE, str(out)], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(out) as data:
    return dict(data)


def _close(actual, expected, rtol):
  """Max-norm relative difference below rtol (and the expected vector not zero)."""
  scale = np.max(np.abs(expected))
  assert scale > 0
  error = np.max(np.abs(actual - expected)) / scale
  assert error < rtol, error


@pytest.mark.slow  # the float64 reference runs in a 2-device subprocess
def test_kernel_form_equals_the_dense_sr_solve(ref):
  """O^T (O O^T + lambda I)^-1 e from the optimizer = (O^T O + lambda I)^-1 O^T e (numpy,
  P x P), with clipping and a norm constraint that binds (coefficient < 1)."""
  assert ref['n_params'] > 16  # more parameters than walkers: the kernel regime
  assert 0.0 < ref['coefficient'] < 0.5
  # Both solves lose ~kappa * 1e-16, kappa = |S| / lambda ~ 1e6-1e7: measured 2e-8.
  _close(ref['minsr'] - ref['params'], ref['minsr_dense'] - ref['params'], 1e-7)


@pytest.mark.slow  # the float64 reference runs in a 2-device subprocess
def test_spring_with_mu_zero_is_minsr(ref):
  # Steps of ~1e-5 taken from parameters of ~1: rounding of the sums is ~1e-11 of them.
  _close(ref['spring_mu0'] - ref['params'], ref['minsr'] - ref['params'], 1e-9)
  # Its state is the unconstrained direction (the step was scaled by the constraint).
  _close(ref['spring_mu0_phi'], ref['minsr_phi_dense'], 1e-7)


@pytest.mark.slow  # the float64 reference runs in a 2-device subprocess
def test_spring_step_is_the_regularised_least_squares_one(ref):
  """phi = mu phi_prev + (O^T O + lambda I)^-1 O^T (e - mu O phi_prev), dense."""
  _close(ref['spring_phi'], ref['spring_phi_dense'], 1e-7)
  _close(ref['spring'] - ref['params'], ref['spring_dense'] - ref['params'], 1e-7)


@pytest.mark.slow  # the float64 reference runs in a 2-device subprocess
def test_two_devices_take_the_one_device_step(ref):
  """The same 16 walkers as 2 x 8, gradients in chunks of 3 (padded): one Gram matrix
  over both devices' walkers, the same step."""
  _close(ref['spring_2dev_phi'], ref['spring_phi'], 1e-11)
  _close(ref['spring_2dev'] - ref['params'], ref['spring'] - ref['params'], 1e-9)


@pytest.mark.slow  # the float64 reference runs in a 2-device subprocess
def test_float32_direction_is_close_to_the_float64_dense_one(ref):
  """64 walkers, damping 1e-3, everything in float32: measured 1e-3 relative."""
  _close(ref['float32_phi'], ref['float64_phi_dense'], 1e-2)


def test_spring_lowers_helium_energy(tmp_path, make_tiny_config):
  cfg = make_tiny_config('He', 'spring', **{'optim.iterations': 40})
  cfg.log.save_path = str(tmp_path / 'run')
  e = train.run(config_lib.resolve(cfg)).energies
  assert e[-10:].mean() < e[:5].mean() - 0.2, (e[:5], e[-10:])


def test_restore_with_another_batch_size_keeps_the_spring_direction(tmp_path,
                                                                   make_tiny_config):
  """phi lives in parameter space, so a restore with another batch keeps it."""
  cfg = make_tiny_config('He', 'spring', **{'optim.iterations': 3})
  cfg.log.save_path = str(tmp_path / 'a')
  saved = parallel.first(train.run(config_lib.resolve(cfg)).final_state.opt_state.phi)
  assert np.any(saved != 0)
  spec = config_lib.resolve(make_tiny_config('He', 'spring', batch_size=32))
  model = iteration.build(spec)
  template = iteration.with_opt_state(
      iteration.init_state(spec, model, jax.random.PRNGKey(0)), model)
  restored = start.restore(str(tmp_path / 'a'), template, 32, False, spec.system)
  assert restored.opt_state_restored
  assert restored.fields['walkers'].shape[0] == 32
  np.testing.assert_array_equal(restored.fields['opt_state'].phi, saved)
