"""Stochastic reconfiguration in kernel form: MinSR and SPRING.

With n walkers over all devices, P parameters, g_i = grad_theta log|psi(x_i)| and e_i the
clipped local energies, let

  O = (g_i - mean_i g_i) / sqrt(n)      (n x P)     e = (e_i - mean_i e_i) / sqrt(n)   (n)

so that O^T O is SR's S matrix (the Fisher of |psi|^2 is 4 O^T O) and the VMC gradient is
2 O^T e. SR steps along (O^T O + lambda I)^-1 O^T e; the push-through identity gives the
same vector as O^T (O O^T + lambda I)^-1 e, an n x n solve instead of a P x P one:

  MinSR  (Chen & Heyl, Nat. Phys. 2024; Rende et al., Commun. Phys. 2024)
         phi = O^T (O O^T + lambda I)^-1 e
  SPRING (Goldshlager, Abrahamsen & Lin, J. Comput. Phys. 2024, arXiv 2401.10190)
         phi_k = mu phi_{k-1} + O^T (O O^T + lambda I)^-1 (e - mu O phi_{k-1}),
         the minimiser of |O phi - e|^2 + lambda |phi - mu phi_{k-1}|^2,

and theta <- theta - c eta phi, eta = optim.lr's schedule. c <= 1 is a norm constraint on
the step, eta^2 c^2 |phi|^2 <= C (optim.*.norm_constraint), Euclidean as in the SPRING
authors' code (vmcnet). KFAC bounds the step's Fisher norm instead, but the batch's O
cannot measure that for SPRING: the carried-over mu phi_{k-1} has components outside the
span of this batch's gradients, which O phi does not see (with the Fisher-norm bound,
SPRING diverged on the C atom within 1000 iterations; docs/optimizers.md). SPRING keeps the
unconstrained phi_k as its state.
The Gram matrix gets (1/n) 1 1^T added, as in the SPRING authors' code: the centring puts
the ones vector in its null space, the term lifts that eigenvalue from lambda to 1, and
since O^T 1 = 0 the step is unchanged in exact arithmetic.

Data parallelism (d devices, b = n / d walkers each): every device computes O for its own
walkers, in chunks of optim.<name>.chunk_size walkers (the per-walker backward passes are
the memory peak). One all-to-all then gives every device all n walkers' rows for a 1/d
slice of the parameters, so O O^T is a sum of d partial products (a psum of n x n), and
the step's slice O_slice^T alpha is all-gathered back. Each device holds b x P and
n x P/d numbers: the memory of O does not grow with the device count, unlike gathering
all rows. The n x n solve is repeated on every device (n^3/3 flops, small beside n^2 P).

Numerics: float32 throughout, the Gram products at full matmul precision (no TF32 on
GPUs), the matrix symmetrised and solved by Cholesky with damping, then one step of
iterative refinement. tests/test_sr.py checks the step against a float64 dense solve.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from vmc import loss, parallel
from vmc.spec import LearningRateSpec, MinsrSpec, SpringSpec
from vmc.optimizers import schedule
from vmc.types import (Array, LogAbsFn, Objective, Optimizer, OptState, Params, PRNGKey,
                       UpdateStats)

_HIGHEST = jax.lax.Precision.HIGHEST


class SpringState(NamedTuple):
  phi: Array  # (P,) the previous unconstrained direction phi_{k-1}, flat


def per_walker_grads(logabs: LogAbsFn, params: Params, x: Array, chunk_size: int) -> Array:
  """(b, P): grad_theta log|psi| of each walker, flattened, chunk_size walkers at a time
  (0: all at once)."""
  def one(xi: Array) -> Array:
    grad = jax.grad(lambda p: logabs(p, xi[None])[0])(params)
    return ravel_pytree(grad)[0]

  b = x.shape[0]
  if chunk_size == 0 or chunk_size >= b:
    return jax.vmap(one)(x)
  n_chunks = -(-b // chunk_size)
  padded = jnp.concatenate([x, x[:n_chunks * chunk_size - b]]) if b % chunk_size else x
  chunks = padded.reshape((n_chunks, chunk_size) + x.shape[1:])
  grads = jax.lax.map(jax.vmap(one), chunks)
  return grads.reshape((n_chunks * chunk_size, -1))[:b]


def _solve(gram: Array, rhs: Array, damping: float) -> Array:
  """(gram + (1/n) 1 1^T + damping I)^-1 rhs by Cholesky and one refinement step."""
  n = gram.shape[0]
  matrix = 0.5 * (gram + gram.T) + 1.0 / n + damping * jnp.eye(n, dtype=gram.dtype)
  factor = jax.scipy.linalg.cho_factor(matrix, lower=True)
  alpha = jax.scipy.linalg.cho_solve(factor, rhs)
  residual = rhs - jnp.matmul(matrix, alpha, precision=_HIGHEST)
  return alpha + jax.scipy.linalg.cho_solve(factor, residual)


def kernel_step(o_local: Array, e_local: Array, damping: float, prev: Array | None) -> Array:
  """The direction phi (P,) from this device's rows of O (b, P) and e (b,).

  prev: mu phi_{k-1} (SPRING) or None (MinSR). Call inside pmap (over parallel.AXIS)."""
  d = jax.lax.axis_size(parallel.AXIS)
  n_params = o_local.shape[1]
  width = -(-n_params // d)  # parameters per device's slice
  if prev is not None:
    o_prev = jnp.matmul(o_local, prev, precision=_HIGHEST)  # (b,): this device's O phi
    e_local = e_local - o_prev
  padded = jnp.pad(o_local, ((0, 0), (0, width * d - n_params)))
  # (n, width): all walkers' rows of this device's parameter slice, in device order.
  o_slice = jax.lax.all_to_all(padded, parallel.AXIS, split_axis=1, concat_axis=0,
                               tiled=True)
  gram = jax.lax.psum(jnp.matmul(o_slice, o_slice.T, precision=_HIGHEST), parallel.AXIS)
  e_all = jax.lax.all_gather(e_local, parallel.AXIS, tiled=True)
  alpha = _solve(gram, e_all, damping)
  phi_slice = jnp.matmul(o_slice.T, alpha, precision=_HIGHEST)
  phi = jax.lax.all_gather(phi_slice, parallel.AXIS, tiled=True)[:n_params]
  return phi if prev is None else phi + prev


def make(s: MinsrSpec | SpringSpec, lr_spec: LearningRateSpec,
         objective: Objective) -> Optimizer:
  """SPRING for the optim.spring section, MinSR for optim.minsr."""
  spring = isinstance(s, SpringSpec)
  mu = s.mu if isinstance(s, SpringSpec) else 0.0
  lr = schedule.learning_rate(lr_spec)

  def init(params: Params, key: PRNGKey, x: Array) -> OptState:
    del key, x
    flat = ravel_pytree(params)[0]
    return SpringState(phi=jnp.zeros_like(flat)) if spring else jnp.zeros(())

  def update(params: Params, opt_state: OptState, key: PRNGKey, x: Array,
             step: Array) -> tuple[Params, OptState, UpdateStats]:
    energy, aux = objective.loss(params, key, x)
    flat, unravel = ravel_pytree(params)
    n = x.shape[0] * jax.lax.axis_size(parallel.AXIS)
    scale = 1.0 / math.sqrt(n)
    e_clip = loss.clip_local_energy(aux.local_energy, objective.clip_width)
    e_local = (e_clip - parallel.pmean(jnp.mean(e_clip))) * scale
    grads = per_walker_grads(objective.logabs, params, x, s.chunk_size)
    o_local = (grads - parallel.pmean(jnp.mean(grads, axis=0))) * scale
    prev = mu * opt_state.phi if spring else None
    phi = kernel_step(o_local, e_local, s.damping, prev)
    rate = lr(step.astype(jnp.float32))
    # phi is the same on every device (all-gathered), so is its norm.
    coefficient = jnp.minimum(1.0, jnp.sqrt(s.norm_constraint / (rate**2 * jnp.sum(phi**2))))
    params = unravel(flat - (coefficient * rate) * phi)
    new_state = SpringState(phi=phi) if spring else opt_state
    return params, new_state, UpdateStats(energy, aux.variance, rate, aux.energy_matrix)

  return Optimizer(init=init, update=update)
