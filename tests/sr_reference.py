"""MinSR and SPRING steps against dense float64 linear algebra, for tests/test_sr.py.

  JAX_ENABLE_X64=1 XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python tests/sr_reference.py OUT.npz

Builds a tiny Li FermiNet, takes one optimizer update (vmc.optimizers.sr, through pmap as
in a run) from fixed parameters and walkers, and writes the new parameters next to the
same step computed independently: O from jax.jacrev of the batched log|psi|, the clipping
in numpy, and the P x P system (O^T O + lambda I) phi = O^T e solved by numpy.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_config  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from vmc import config as config_lib, iteration, parallel  # noqa: E402
from vmc.optimizers import sr  # noqa: E402

RATE = 0.05


def model_for(optimizer, **overrides):
  cfg = tiny_config('Li', optimizer, **{'optim.lr.rate': RATE, **overrides})
  spec = config_lib.resolve(cfg)
  return spec, iteration.build(spec)


def dense_direction(objective, params, x, damping, prev, clip=5.0):
  """phi = prev + (O^T O + damping I)^-1 O^T (e - O prev), in numpy float64."""
  n = x.shape[0]
  jac = jax.jit(jax.jacrev(objective.logabs))(params, x)
  g = np.concatenate([np.asarray(a).reshape(n, -1) for a in jax.tree_util.tree_leaves(jac)],
                     axis=1)
  o = (g - g.mean(axis=0)) / np.sqrt(n)
  e = np.asarray(jax.jit(objective.local_energy)(params, x))
  median = np.median(e)
  mad = np.mean(np.abs(e - median))
  e = np.clip(e, median - clip * mad, median + clip * mad)
  e = (e - e.mean()) / np.sqrt(n)
  s = o.T @ o + damping * np.eye(o.shape[1])
  return prev + np.linalg.solve(s, o.T @ (e - o @ prev))


def dense_update(flat, phi, norm_constraint):
  coefficient = min(1.0, np.sqrt(norm_constraint / (RATE**2 * np.sum(phi**2))))
  return flat - coefficient * RATE * phi, coefficient


def update(spec, model, params, opt_state, x, devices):
  """One optimizer update on len(devices) devices; x is the global batch."""
  d = len(devices)
  step = jax.pmap(model.optimizer.update, axis_name=parallel.AXIS, devices=devices)
  rep = lambda tree: jax.tree_util.tree_map(lambda a: jnp.stack([a] * d), tree)
  keys = jax.random.split(jax.random.PRNGKey(3), d)
  params, opt_state, _ = step(rep(params), rep(opt_state), keys,
                              x.reshape((d, -1) + x.shape[1:]), rep(jnp.zeros((), jnp.int32)))
  first = lambda tree: jax.tree_util.tree_map(lambda a: np.asarray(a[0]), tree)
  return ravel_pytree(first(params))[0], first(opt_state)


def main(out):
  devices = jax.devices()
  assert len(devices) == 2 and jax.config.jax_enable_x64
  to64 = lambda tree: jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), tree)
  constraint = {'optim.minsr.norm_constraint': 1e-6, 'optim.spring.norm_constraint': 1e-6}
  spec, model = model_for('minsr', **constraint)
  params = to64(model.network.init(jax.random.PRNGKey(1)))
  flat, _ = ravel_pytree(params)
  x = 1.5 * jax.random.normal(jax.random.PRNGKey(2), (16, 9), jnp.float64)
  prev = 0.1 * np.asarray(jax.random.normal(jax.random.PRNGKey(4), flat.shape, jnp.float64))
  results = {'n_params': flat.size, 'params': np.asarray(flat)}

  # MinSR (with a norm constraint that binds) against the dense P x P solve.
  phi = dense_direction(model.objective, params, x, 1e-3, np.zeros_like(prev))
  results['minsr_dense'], results['coefficient'] = dense_update(flat, phi, 1e-6)
  results['minsr'], _ = update(spec, model, params, jnp.zeros(()), x, devices[:1])
  results['minsr_phi_dense'] = phi

  # SPRING with mu = 0 is MinSR, and keeps the unconstrained direction as its state.
  spec, model = model_for('spring', **{'optim.spring.mu': 0.0, **constraint})
  state = sr.SpringState(phi=jnp.asarray(prev))
  results['spring_mu0'], spring_state = update(spec, model, params, state, x, devices[:1])
  results['spring_mu0_phi'] = spring_state.phi

  # SPRING with momentum, from a previous direction: the regularised least-squares step.
  # No walker clipped (optim.clip_local_energy huge): clipping centres on the mean of the
  # devices' medians (FermiNet's convention), which depends on how walkers are split.
  mu = 0.9
  unclipped = {'optim.spring.mu': mu, 'optim.clip_local_energy': 1e6}
  spec, model = model_for('spring', **unclipped)
  phi = dense_direction(model.objective, params, x, 1e-3, mu * prev, clip=1e6)
  results['spring_dense'], _ = dense_update(flat, phi, 1e-3)
  results['spring_phi_dense'] = phi
  results['spring'], state1 = update(spec, model, params, state, x, devices[:1])
  results['spring_phi'] = state1.phi
  # The same global batch on 2 devices, gradients in chunks of 3 walkers (8 per device).
  spec, model = model_for('spring', **unclipped, **{'optim.spring.chunk_size': 3})
  results['spring_2dev'], state2 = update(spec, model, params, state, x, devices)
  results['spring_2dev_phi'] = state2.phi

  # float32 throughout, 64 walkers: the direction against the float64 dense one.
  spec, model = model_for('spring', **{'optim.spring.mu': 0.0})
  x64 = 1.5 * jax.random.normal(jax.random.PRNGKey(5), (64, 9), jnp.float64)
  phi = dense_direction(model.objective, params, x64, 1e-3, np.zeros_like(prev))
  to32 = lambda tree: jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), tree)
  state = sr.SpringState(phi=jnp.zeros(flat.shape, jnp.float32))
  _, state32 = update(spec, model, to32(params), state, x64.astype(jnp.float32), devices[:1])
  results['float32_phi'], results['float64_phi_dense'] = state32.phi, phi
  np.savez(out, **results)


if __name__ == '__main__':
  main(sys.argv[1])
