"""Forward Laplacian of the FermiNet: (lap log|psi|, grad log|psi|) in one forward pass.

Instead of 3N forward-over-reverse passes, every intermediate u carries its value, its
Jacobian with respect to the 3N electron coordinates and its Laplacian (Li et al., "A
computational framework for neural network-based variational Monte Carlo with Forward
Laplacian", Nat. Mach. Intell. 2024). The rules are those of calculus:

  linear u -> u W:     J -> J W,            lap -> lap W
  elementwise s(u):    J -> s'(u) J,        lap -> s'(u) lap + s''(u) sum_c J_c^2
  product u v:         lap -> lap_u v + 2 sum_c J_u,c J_v,c + u lap_v
  log|det A|:          grad_c = tr(A^-1 dA_c),  lap = tr(A^-1 lap A) - sum_c tr((A^-1 dA_c)^2)

The speed comes from the network's structure, used here explicitly:
- the input features and the two-electron stream h_ij depend on r_i and r_j only, so h_ij
  carries two 3-vectors of derivatives instead of 3N;
- in each one-electron layer the electron means <h_j> are the same for every electron i, so
  their part of W f_i is computed once per walker, not once per electron.
Only the one-electron stream from layer 1 on has a dense (3N) Jacobian.

This mirrors `ferminet.FermiNet` (with every envelope option and the simple_ee Jastrow) and
reads its parameters; `tests/test_laplacian.py` checks it against the loop of jvps for
atoms, molecules, both determinant modes, every envelope and the Jastrow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp

from vmc.networks import envelopes, ferminet, jastrows, orbitals


class Dense(NamedTuple):
  """u with Jacobian j[k, c, ...] = du / d r_kc over all electrons k, and Laplacian l."""
  v: jnp.ndarray  # (..., F)
  j: jnp.ndarray  # (n, 3, ..., F)
  l: jnp.ndarray  # (..., F)


class Pair(NamedTuple):
  """Pair features u_ij depending on r_i and r_j only (zero derivatives when i == j)."""
  v: jnp.ndarray  # (n, n, F)
  ji: jnp.ndarray  # (3, n, n, F): d u_ij / d r_i
  jj: jnp.ndarray  # (3, n, n, F): d u_ij / d r_j
  l: jnp.ndarray  # (n, n, F): Laplacian over both electrons


def _tanh(pre_v: jnp.ndarray, pre_l: jnp.ndarray, sum_j2: jnp.ndarray,
          j_list: list[jnp.ndarray]) -> tuple[jnp.ndarray, list[jnp.ndarray], jnp.ndarray]:
  """tanh of a pre-activation given its Laplacian and sum of squared derivatives."""
  t = jnp.tanh(pre_v)
  d1 = 1.0 - t * t
  d2 = -2.0 * t * d1
  return t, [d1 * j for j in j_list], d1 * pre_l + d2 * sum_j2


def _input_features(x: jnp.ndarray, atoms: jnp.ndarray, soft: tuple[float, ...]) -> tuple[
    tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray], Pair, jnp.ndarray, jnp.ndarray,
    jnp.ndarray]:
  """h1^0 (value, own-electron Jacobian (3, n, 4A), Laplacian), the pair stream h2^0,
  ae, r_ae and lap r_ae."""
  ae, r_ae, ee, r_ee = ferminet.features(x, atoms, soft)
  n, n_atoms = r_ae.shape
  eye3 = jnp.eye(3, dtype=x.dtype)
  # d(ae_iIc')/d r_ic = delta_cc'; with r = sqrt(|ae|^2 + s): d r/d r_ic = ae_iIc / r and
  # lap r = 2 / r + s / r^3 (2 / r for s = 0).
  j_ae = jnp.broadcast_to(eye3[:, None, None, :], (3, n, n_atoms, 3))
  j_r = jnp.transpose(ae / r_ae[..., None], (2, 0, 1))[..., None]
  lap_r = 2.0 / r_ae
  if soft:
    lap_r = lap_r + jnp.asarray(soft, x.dtype) / r_ae ** 3
  h1_v = jnp.concatenate([ae, r_ae[..., None]], axis=-1).reshape(n, -1)
  h1_j = jnp.concatenate([j_ae, j_r], axis=-1).reshape(3, n, -1)
  h1_l = jnp.concatenate([jnp.zeros_like(ae), lap_r[..., None]], axis=-1).reshape(n, -1)

  eye = jnp.eye(n, dtype=x.dtype)
  off = 1.0 - eye
  inv_r = off / (r_ee + eye)
  j_ee = jnp.broadcast_to(eye3[:, None, None, :], (3, n, n, 3)) * off[None, :, :, None]
  j_ree = (jnp.transpose(ee, (2, 0, 1)) * inv_r[None])[..., None]
  h2_ji = jnp.concatenate([j_ee, j_ree], axis=-1)
  h2 = Pair(v=jnp.concatenate([ee, r_ee[..., None]], axis=-1), ji=h2_ji, jj=-h2_ji,
            l=jnp.concatenate([jnp.zeros_like(ee), 4.0 * inv_r[..., None]], axis=-1))
  return (h1_v, h1_j, h1_l), h2, ae, r_ae, lap_r


def _sum_of_squares(rows: jnp.ndarray) -> jnp.ndarray:
  """sum_r rows[r]^2 as a chain of elementwise adds over the leading (derivative) axis.

  The same sum as jnp.sum(rows ** 2, axis=0), but XLA's CPU backend then materializes the
  assembled pre-activation Jacobian once and adds vectorized slabs; given the reduce, it
  fused the Jacobian's assembly into it and ran it element by element, once more for the
  tanh (N2's local energy at batch 256: 1.80 s before, 1.37 s after; docs/benchmarks.md).
  """
  total = rows[0] * rows[0]
  for row in rows[1:]:
    total = total + row * row
  return total


def _embed_local(j_local: jnp.ndarray) -> jnp.ndarray:
  """Own-electron Jacobian (3, n, F) -> dense (n, 3, n, F) (zero for k != i)."""
  n = j_local.shape[1]
  return jnp.einsum('ki,cif->kcif', jnp.eye(n, dtype=j_local.dtype), j_local)


def _one_electron_layer(h1: Sequence[jnp.ndarray], local: bool, h2: Pair, kernel: jnp.ndarray,
                        bias: jnp.ndarray, spins: Sequence[tuple[int, int]]) -> Dense:
  """tanh(W f_i + b) with f_i = [h_i, <h_j>_s, <h_ij>_{j in s} for each spin s].

  W is used block by block: the electron means <h_j>_s are the same for every i, so their
  part is multiplied once per walker; the narrow two-electron parts (and, in layer 0, the
  per-electron input features) go through one matmul of width 4A + 2 * F2; only the dense
  Jacobian of h_i from layer 1 on needs the wide (3N x N x F1) matmul.
  """
  h1_v, h1_j, h1_l = h1
  n, f1 = h1_v.shape
  f2 = h2.v.shape[-1]
  k_own, rows = kernel[:f1], f1
  pre_v = h1_v @ k_own + bias
  pre_l = h1_l @ k_own
  # (n, 3, w): d/d r_k of the electron-mean terms, the same for every i
  mean_j: jnp.ndarray | float = 0.0
  own, own_k = ([h1_j], [k_own]) if local else ([], [])  # (3, n, .): d/d r_i terms only
  from_j = []  # (n_s, 3, n, w): d/d r_k of <h_ik>_s for the electrons k of each spin
  for lo, hi in spins:
    n_s = hi - lo
    k_g, k_m = kernel[rows:rows + f1], kernel[rows + f1:rows + f1 + f2]
    rows += f1 + f2
    pre_v = pre_v + jnp.mean(h1_v[lo:hi], axis=0) @ k_g
    pre_l = pre_l + jnp.mean(h1_l[lo:hi], axis=0) @ k_g
    if local:  # d<h_j>_s / d r_k = [k in s] j_k / n_s
      in_s = ((jnp.arange(n) >= lo) & (jnp.arange(n) < hi)) / n_s
      g_j = jnp.transpose(h1_j, (1, 0, 2)) * in_s[:, None, None]
    else:
      g_j = jnp.mean(h1_j[:, :, lo:hi], axis=2)
    mean_j = mean_j + g_j @ k_g
    # <h_ij>_{j in s}: d/d r_i gets a term from every j, d/d r_k (k in s) from j = k only.
    pre_v = pre_v + jnp.mean(h2.v[:, lo:hi], axis=1) @ k_m
    pre_l = pre_l + jnp.mean(h2.l[:, lo:hi], axis=1) @ k_m
    own.append(jnp.mean(h2.ji[:, :, lo:hi], axis=2))
    own_k.append(k_m)
    from_j.append(jnp.transpose(h2.jj[:, :, lo:hi], (2, 0, 1, 3)) @ (k_m / n_s))
  own_j = jnp.concatenate(own, axis=-1) @ jnp.concatenate(own_k, axis=0)
  # spins is never empty, so mean_j is an array here (mypy sees its float start).
  pre_j = (jnp.concatenate(from_j, axis=0) + _embed_local(own_j)
           + mean_j[:, :, None, :])  # type: ignore[index]
  if not local:
    pre_j = pre_j + h1_j @ k_own
  sum_j2 = _sum_of_squares(pre_j.reshape(-1, *pre_j.shape[2:]))
  t, (t_j,), t_l = _tanh(pre_v, pre_l, sum_j2, [pre_j])
  return Dense(t, t_j, t_l)


def _two_electron_layer(h2: Pair, kernel: jnp.ndarray, bias: jnp.ndarray) -> Pair:
  pre_v = h2.v @ kernel + bias
  pre_ji, pre_jj = h2.ji @ kernel, h2.jj @ kernel
  sum_j2 = jnp.sum(pre_ji * pre_ji, axis=0) + jnp.sum(pre_jj * pre_jj, axis=0)
  t, (t_ji, t_jj), t_l = _tanh(pre_v, h2.l @ kernel, sum_j2, [pre_ji, pre_jj])
  return Pair(t, t_ji, t_jj, t_l)


def _slogdet_laplacian(a: jnp.ndarray, a_j: jnp.ndarray, a_l: jnp.ndarray
                      ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """sign, log|det A|, its gradient (D, 3N) and Laplacian (D,) for A (D, m, m), with
  a_j (D, 3N, m, m) and a_l (D, m, m).

  With B_c = dA_c A^-1 (all 3N of them from one (3N m, m) x (m, m) product per
  determinant): grad_c = tr B_c, lap = tr(lap A A^-1) - sum_c tr(B_c B_c). Traces of
  products are taken as sums of elementwise products, which on CPU is 3x faster than
  batched small solves or explicit diagonals.
  """
  sign, logdet = jnp.linalg.slogdet(a)
  inv = jnp.linalg.inv(a)
  n_det, n_coord, m, _ = a_j.shape
  b = (a_j.reshape(n_det, n_coord * m, m) @ inv).reshape(n_det, n_coord, m, m)
  inv_t = jnp.swapaxes(inv, -1, -2)
  grad = jnp.sum(a_j * inv_t[:, None], axis=(-2, -1))
  lap = (jnp.sum(a_l * inv_t, axis=(-2, -1))
         - jnp.sum(b * jnp.swapaxes(b, -1, -2), axis=(1, 2, 3)))
  return sign, logdet, grad, lap


def _sum_of_determinants(sign: Any, logdet: Any, grad: Any, lap: Any, states: int
                         ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """sign, log|psi|, lap log|psi| and grad log|psi| of psi = sum_d sign_d exp(logdet_d)
  from each determinant's (D,), (D,), grad (D, 3N), lap (D,); with states = K > 0 one
  psi per state, over its D / K consecutive determinants: (K,), (K,), (K,), (K, 3N).
  The weights w_d = psi_d / psi sum to one."""
  det_sign = jnp.broadcast_to(sign, jnp.shape(logdet))
  if states:
    det_sign, logdet, lap = (jnp.reshape(a, (states, -1)) for a in (det_sign, logdet, lap))
    grad = jnp.reshape(grad, (states, -1, grad.shape[-1]))
  sign, logabs = orbitals.logdet_sum(det_sign, logdet)
  weights = det_sign * sign[..., None] * jnp.exp(logdet - logabs[..., None])
  grad_psi = jnp.einsum('...d,...dc->...c', weights, grad)
  lap_psi = jnp.sum(weights * (lap + jnp.sum(grad * grad, axis=-1)), axis=-1)
  return sign, logabs, lap_psi - jnp.sum(grad_psi * grad_psi, axis=-1), grad_psi


def laplacian(module: ferminet.FermiNet, params: Mapping[str, Any],
              x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(lap log|psi|, grad log|psi| (3N,)) of one walker; same parameters as `module`. With
  module.head.states = K: one per state, (K,) and (K, 3N)."""
  return _evaluate(module, params, x)[2:]


def sign_logabs(module: ferminet.FermiNet, params: Mapping[str, Any],
                x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(sign, log|psi|) of one walker, equal to `module.apply(params, x)`.

  Under jit the Jacobians and Laplacians above are dead code and are dropped, leaving the
  network with its electron-mean blocks of W applied once per walker: 2-3x fewer flops
  than the module's one matmul over [h_i, <h_j>, <h_ij>]. For sampling; training
  differentiates the module itself, whose dense layers kfac-jax recognises.
  """
  return _evaluate(module, params, x)[:2]


def _evaluate(module: ferminet.FermiNet, params: Mapping[str, Any], x: jnp.ndarray
              ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """sign, log|psi|, lap log|psi|, grad log|psi| of one walker."""
  p = params['params']
  n_up, n_down = module.nspins
  n = n_up + n_down
  spins = [(lo, hi) for lo, hi in ((0, n_up), (n_up, n)) if hi > lo]
  h1: tuple[jnp.ndarray, ...]
  h1, h2, ae, r_ae, lap_r = _input_features(x, jnp.asarray(module.atoms, x.dtype), module.soft)
  local = True
  n_layers = len(module.hidden_dims)
  for layer in range(n_layers):
    dense = p[ferminet.ONE_ELECTRON.format(layer)]
    new = _one_electron_layer(h1, local, h2, dense['kernel'], dense['bias'], spins)
    if new.v.shape == h1[0].shape:
      old_j = _embed_local(h1[1]) if local else h1[1]
      new = Dense(new.v + h1[0], new.j + old_j, new.l + h1[2])
    h1, local = tuple(new), False
    if layer < n_layers - 1:
      two = p[ferminet.TWO_ELECTRON.format(layer)]
      new2 = _two_electron_layer(h2, two['kernel'], two['bias'])
      h2 = (Pair(*(a + b for a, b in zip(new2, h2, strict=True)))
            if new2.v.shape == h2.v.shape else new2)
  h1_v, h1_j, h1_l = h1  # config.resolve guarantees at least one layer: h1_j is dense

  opts = module.head
  k_det = opts.all_determinants
  blocks = []
  for spin, (n_s, lo) in enumerate(((n_up, 0), (n_down, n_up))):
    if n_s == 0:
      continue
    n_orb = n if opts.full_det else n_s
    orb_p = p[orbitals.ORBITALS.format(spin)]
    w = orb_p['kernel']
    o_v = h1_v[lo:lo + n_s] @ w
    if opts.bias_orbitals:
      o_v = o_v + orb_p['bias']
    o_j = h1_j[:, :, lo:lo + n_s] @ w
    o_l = h1_l[lo:lo + n_s] @ w
    env_p = p[orbitals.ENVELOPE.format(spin)]
    e_v, e_j, e_l = envelopes.derivatives(ae[lo:lo + n_s], r_ae[lo:lo + n_s], env_p,
                                          opts.envelope_type, opts.envelope_shared, k_det,
                                          lap_r[lo:lo + n_s] if module.soft else None)
    own = jnp.eye(n, n_s, k=-lo, dtype=x.dtype)  # own[lo + i, i] = 1
    own_o_j = jnp.einsum('ki,kcif->cif', own, o_j)  # d orbital_i / d r_i: (3, n_s, K)
    v = o_v * e_v
    j = o_j * e_v + jnp.einsum('ki,cif->kcif', own, o_v[None] * e_j)
    l = o_l * e_v + 2.0 * jnp.sum(own_o_j * e_j, axis=0) + o_v * e_l
    # (n_s, D * n_orb) -> (D, n_s, n_orb); Jacobian (n, 3, ...) -> (D, 3N, n_s, n_orb).
    shape = (n_s, k_det, n_orb)
    blocks.append((jnp.transpose(v.reshape(shape), (1, 0, 2)),
                   jnp.transpose(j.reshape((n * 3,) + shape), (2, 0, 1, 3)),
                   jnp.transpose(l.reshape(shape), (1, 0, 2))))

  parts: Sequence[tuple[jnp.ndarray, ...]]
  if opts.full_det:
    parts = [tuple(jnp.concatenate(z, axis=-2) for z in zip(*blocks, strict=True))]
  else:
    parts = blocks
  sign: jnp.ndarray | float
  logdet: jnp.ndarray | float
  grad: jnp.ndarray | float
  lap: jnp.ndarray | float
  sign, logdet, grad, lap = 1.0, 0.0, 0.0, 0.0  # per determinant
  for a, a_j, a_l in parts:
    s, ld, g, lp = _slogdet_laplacian(a, a_j, a_l)
    sign, logdet, grad, lap = sign * s, logdet + ld, grad + g, lap + lp
  sign, logabs, lap_log, grad_psi = _sum_of_determinants(sign, logdet, grad, lap,
                                                         opts.states)
  if opts.jastrow == 'simple_ee':  # log|psi| = J + log|sum_d det_d|: derivatives add up
    jp = p[orbitals.JASTROW]
    j_v, j_grad, j_lap = jastrows.simple_ee_derivatives(x, module.nspins, jp[jastrows.PARALLEL][0],
                                                        jp[jastrows.ANTIPARALLEL][0])
    logabs, grad_psi, lap_log = logabs + j_v, grad_psi + j_grad, lap_log + j_lap
  return sign, logabs, lap_log, grad_psi
