"""The operations every network is written in, on plain arrays and on derivative carriers.

On plain arrays a network is psi as flax and kfac-jax see it (one matmul per dense layer:
what training differentiates); on carriers, psi with its gradient and Laplacian in the 3N
electron coordinates in one forward pass (the forward Laplacian, Li et al., Nat. Mach.
Intell. 2024), or, with only the value used under jit, a cheaper psi (sampling). A carrier
u = (value v, Jacobian J, Laplacian l), c over the coordinates, follows

  linear u W:  J W, l W                      f(u):  f'(u) J, f'(u) l + f''(u) sum_c J_c^2
  u w:         J_u w + u J_w, l_u w + 2 sum_c J_u,c J_w,c + u l_w
  log|det A|:  tr(A^-1 dA_c),  tr(A^-1 l_A) - sum_c tr((A^-1 dA_c)^2)

J is a sum of terms that keep the networks' sparsity, each an array `a`: its kind's
derivative axes, then axes that broadcast against the value's:

  Own   a (3, rows, ...): row r depends on electron first + r only (one-electron features)
  Pair  a (2, 3, n, n, ...): u[i, j] depends on r_i (a[0]) and r_j (a[1]) only; entries
        i = j must be constant (FermiNet's two-electron stream)
  Full  a (k, 3, ...): d/dr of electrons first..first+k-1 (means, attention, determinants)

Linear maps act on each term (a layer's Own terms in one matmul); a nonlinearity adds them
up first. So an electron mean, one vector per walker, meets the next layer's weights once
per walker, not once per electron.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import string
from collections.abc import Callable, Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Term:
  a: Array
  first: int = 0
  lead: ClassVar[int] = 2  # the derivative axes of `a`, before the value's


class Own(Term):
  lead = 1


class Pair(Term):
  pass


class Full(Term):
  pass


@dataclasses.dataclass(frozen=True)
class Lap:
  """A value with its Jacobian (the sum of `terms`) and Laplacian over n electrons."""
  v: Array
  terms: tuple[Term, ...]
  l: Array
  n: int


Value = Array | Lap
Const = ArrayLike  # a plain operand: an array, or a number


def seed(x: Array) -> Lap:
  """The electron positions (n, 3) of one walker x (3N,), carrying their derivatives."""
  pos = x.reshape(-1, 3)
  n = pos.shape[0]
  eye = jnp.broadcast_to(jnp.eye(3, dtype=x.dtype)[:, None, :], (3, n, 3))
  return Lap(pos, (Own(eye),), jnp.zeros_like(pos), n)


def derivatives(u: Lap) -> tuple[Array, Array]:
  """(Laplacian, gradient (..., 3N)) of a carrier."""
  a = _full(u)
  return u.l, jnp.moveaxis(a.reshape(3 * u.n, *a.shape[2:]), 0, -1)


def shape(u: Value) -> tuple[int, ...]:
  return (u.v if isinstance(u, Lap) else u).shape


def width(u: Value) -> int:
  return shape(u)[-1]


def dtype(u: Value) -> jnp.dtype:
  return (u.v if isinstance(u, Lap) else u).dtype


def _key(t: Term) -> tuple:
  """Terms with equal keys add up into one."""
  return type(t), t.first, t.a.shape[:t.lead]


def _add(arrays: Sequence[Array]) -> Array:
  return functools.reduce(operator.add, arrays)


def _sum(terms: Sequence[Term]) -> Array:
  """The arrays of terms of one key added up, their value axes aligned to the right."""
  ndim = max(t.a.ndim for t in terms)
  return _add([t.a.reshape(t.a.shape[:t.lead] + (1,) * (ndim - t.a.ndim) + t.a.shape[t.lead:])
               for t in terms])


def _merge(terms: Sequence[Term]) -> tuple[Term, ...]:
  """Terms of the same key added up (a residual connection: then one matmul in the next
  layer, not two)."""
  groups: dict[tuple, list[Term]] = {}
  for t in terms:
    groups.setdefault(_key(t), []).append(t)
  return tuple(type(g[0])(_sum(g), g[0].first) for g in groups.values())


def _embed(t: Term, n: int) -> Array:
  """A term as an (n, 3, ...) array over all electrons."""
  if isinstance(t, Own):
    eye = jnp.eye(n, t.a.shape[1], k=-t.first, dtype=t.a.dtype)  # [first + r, r] = 1
    return jnp.einsum('kr,cr...->kcr...', eye, t.a)
  if isinstance(t, Pair):
    eye = jnp.eye(n, dtype=t.a.dtype)
    return (jnp.einsum('ki,ci...->kci...', eye, t.a[0])
            + jnp.einsum('kj,cij...->kcij...', eye, t.a[1]))
  k = t.a.shape[0]
  return t.a if k == n else jnp.pad(t.a, [(t.first, n - t.first - k)]
                                    + [(0, 0)] * (t.a.ndim - 1))


def _tiled(terms: tuple[Term, ...], n: int) -> list[Term]:
  """Full terms whose electron ranges tile 0..n-1 (a mean over each spin's partners)
  joined into one: one copy instead of a padded array each."""
  blocks: dict[tuple[int, ...], list[Term]] = {}
  rest: list[Term] = []
  for t in terms:
    if isinstance(t, Full) and t.a.shape[0] < n:
      blocks.setdefault(t.a.shape[1:], []).append(t)
    else:
      rest.append(t)
  for group in blocks.values():
    group.sort(key=lambda t: t.first)
    ends = [t.first + t.a.shape[0] for t in group]
    if group[0].first == 0 and ends[-1] == n and [t.first for t in group[1:]] == ends[:-1]:
      rest.append(Full(jnp.concatenate([t.a for t in group], axis=0)))
    else:
      rest.extend(group)
  return rest


def _full(u: Lap) -> Array:
  """The Jacobian as one (n, 3, *value shape) array."""
  total = jnp.zeros((), u.v.dtype)
  for t in _tiled(u.terms, u.n):
    a = _embed(t, u.n)
    total = total + a.reshape(a.shape[:2] + (1,) * (u.v.ndim + 2 - a.ndim) + a.shape[2:])
  return jnp.broadcast_to(total, (u.n, 3) + u.v.shape)


def _single(u: Lap) -> Term:
  """The terms of u as one: of their kind where they add up (a Full one over all n
  electrons), else Full."""
  keys = {_key(t) for t in u.terms}
  if len(keys) == 1:
    t = u.terms[0]
    if not isinstance(t, Full) or (t.first == 0 and t.a.shape[0] == u.n):
      a = _sum(u.terms)
      return type(t)(jnp.broadcast_to(a, a.shape[:t.lead] + u.v.shape), t.first)
  return Full(_full(u))


def _map(fn: Callable[[Array], Array], t: Term) -> Term:
  """fn (acting on values) applied to a term, mapped over its derivative axes."""
  for _ in range(t.lead):
    fn = jax.vmap(fn)
  return type(t)(fn(t.a), t.first)


def rowwise(fn: Callable[[Array], Array], u: Value) -> Value:
  """A linear fn of the value that keeps its first axis the electrons' (a reshape or an
  index of the other axes, a sum over them)."""
  if not isinstance(u, Lap):
    return fn(u)
  return Lap(fn(u.v), (_map(fn, _single(u)),), fn(u.l), u.n)


def linear_map(fn: Callable[[Array], Array], u: Value) -> Value:
  """Any linear fn of the value (a transpose, a reshape across the electrons' axis)."""
  if not isinstance(u, Lap):
    return fn(u)
  return Lap(fn(u.v), (_map(fn, Full(_full(u))),), fn(u.l), u.n)


def sum(u: Value, axis: int, keepdims: bool = False) -> Value:  # noqa: A001
  return rowwise(lambda t: jnp.sum(t, axis=axis, keepdims=keepdims), u)


def mean(u: Value, axis: int, keepdims: bool = False) -> Value:
  return rowwise(lambda t: jnp.mean(t, axis=axis, keepdims=keepdims), u)


def _carrier_first(u: Value | Const, w: Value | Const) -> tuple[Lap, Value | Const]:
  """The operands of a commutative operation, a carrier first."""
  return (u, w) if isinstance(u, Lap) else (w, u)  # type: ignore[return-value]


def add(u: Value | Const, w: Value | Const) -> Value:
  if not isinstance(u, Lap) and not isinstance(w, Lap):
    return jnp.add(u, w)
  u, w = _carrier_first(u, w)
  if not isinstance(w, Lap):
    v = u.v + w
    return Lap(v, u.terms, jnp.broadcast_to(u.l, v.shape), u.n)
  return Lap(u.v + w.v, _merge(u.terms + w.terms), u.l + w.l, u.n)


def sub(u: Value | Const, w: Value | Const) -> Value:
  return add(u, mul(w, -1.0))


def mul(u: Value | Const, w: Value | Const) -> Value:
  """The product, with the product rule between two carriers."""
  if not isinstance(u, Lap) and not isinstance(w, Lap):
    return jnp.multiply(u, w)
  u, w = _carrier_first(u, w)
  if not isinstance(w, Lap):
    t = _single(u)
    return Lap(u.v * w, (type(t)(t.a * w, t.first),), u.l * w, u.n)
  tu, tw = _single(u), _single(w)
  if isinstance(tw, Full) and isinstance(tu, Own):
    (u, tu), (w, tw) = (w, tw), (u, tu)
  terms: tuple[Term, ...]
  if isinstance(tu, Full) and isinstance(tw, Own):  # orbitals times envelopes
    terms = (Full(tu.a * w.v), Own(u.v * tw.a, tw.first))
    eye = jnp.eye(u.n, tw.a.shape[1], k=-tw.first, dtype=tu.a.dtype)
    cross = jnp.sum(jnp.einsum('kr,kcr...->cr...', eye, tu.a) * tw.a, axis=0)
  else:
    if _key(tu) != _key(tw):
      tu, tw = Full(_full(u)), Full(_full(w))
    terms = (type(tu)(tu.a * w.v + u.v * tw.a, tu.first),)
    cross = jnp.sum(tu.a * tw.a, axis=tuple(range(tu.lead)))
  return Lap(u.v * w.v, terms, u.l * w.v + 2.0 * cross + u.v * w.l, u.n)


def square(u: Value) -> Value:
  # plain: one operand, as kfac-jax's graph matcher wants (x * x has two branches)
  return mul(u, u) if isinstance(u, Lap) else jnp.square(u)


def div(u: Value | Const, w: Value | Const) -> Value:
  """u / w (for a carrier w, through its reciprocal)."""
  if not isinstance(u, Lap) and not isinstance(w, Lap):
    return jnp.divide(u, w)
  return mul(u, reciprocal(w) if isinstance(w, Lap) else jnp.divide(1.0, w))


def _elementwise(f: Callable[[Array], Array],
                 derivs: Callable[[Array, Array], tuple[Array, Array]]
                 ) -> Callable[[Value], Value]:
  """An elementwise f, with (f'(x), f''(x)) = derivs(f(x), x). sum_c J_c^2 is a chain of
  adds, not a reduce, which XLA's CPU backend would fuse with the Jacobian's assembly and
  run element by element (N2's local energy, batch 256: 1.37 s, not 1.80 s)."""
  def apply(u: Value) -> Value:
    if not isinstance(u, Lap):
      return f(u)
    t = _single(u)
    v = f(u.v)
    d1, d2 = derivs(v, u.v)
    squares = _add([row * row for row in t.a.reshape((-1,) + t.a.shape[t.lead:])])
    return Lap(v, (type(t)(t.a * d1, t.first),), d1 * u.l + d2 * squares, u.n)
  return apply


tanh = _elementwise(jnp.tanh, lambda t, x: (1.0 - t * t, -2.0 * t * (1.0 - t * t)))
exp = _elementwise(jnp.exp, lambda e, x: (e, e))
log1p = _elementwise(jnp.log1p, lambda _, x: (1.0 / (1.0 + x), -1.0 / (1.0 + x) ** 2))
sqrt = _elementwise(jnp.sqrt, lambda s, x: (0.5 / s, -0.25 / (s * x)))
reciprocal = _elementwise(lambda x: 1.0 / x, lambda r, x: (-r * r, 2.0 * r * r * r))
rsqrt = _elementwise(lax.rsqrt, lambda r, x: (-0.5 * r / x, 0.75 * r / (x * x)))


def linear(u: Value | Sequence[Value], kernel: Array, bias: Array | None = None,
           flatten: bool = False) -> Value:
  """u W + b over the last axis; u may be a list of parts, W's rows theirs in order.

  Plain arrays: the parts concatenated (a part without the electrons' axis, a mean over
  electrons, is the same for every electron), one matmul as flax's Dense (kfac-jax
  recognises it; `flatten` folds the leading axes into one first). Carriers: each term
  times its part's rows of W, Own terms together in one matmul."""
  parts: list[Value] = list(u) if isinstance(u, (list, tuple)) else [u]  # type: ignore[list-item]
  laps = [p for p in parts if isinstance(p, Lap)]
  if not laps:
    rows = max(shape(p)[:-1] for p in parts)
    x = jnp.concatenate([jnp.broadcast_to(p, rows + shape(p)[-1:])  # type: ignore[arg-type]
                         for p in parts], -1)
    y = lax.dot_general(x.reshape(-1, x.shape[-1]) if flatten else x, kernel,
                        (((x.ndim - 1 if not flatten else 1,), (0,)), ((), ())))
    y = y if bias is None else y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return y.reshape(x.shape[:-1] + y.shape[-1:])
  v: Array = jnp.zeros(kernel.shape[-1], kernel.dtype) if bias is None else bias
  l = jnp.zeros_like(v)
  terms: list[Term] = []
  own: dict[tuple[int, tuple[int, ...]], list[tuple[Array, Array]]] = {}
  row = 0
  for p in parts:
    k = kernel[row:row + width(p)]
    row += width(p)
    if not isinstance(p, Lap):
      v = v + p @ k
      continue
    v, l = v + p.v @ k, l + p.l @ k
    for t in p.terms:
      if isinstance(t, Own):
        own.setdefault((t.first, t.a.shape[:-1]), []).append((t.a, k))
      else:
        terms.append(type(t)(t.a @ k, t.first))
  for (first, _), pieces in own.items():
    a = jnp.concatenate([a for a, _ in pieces], axis=-1)
    terms.append(Own(a @ jnp.concatenate([k for _, k in pieces], axis=0), first))
  return Lap(v, tuple(terms), jnp.broadcast_to(l, v.shape), laps[0].n)


def mean_rows(u: Value, lo: int, hi: int) -> Value:
  """The mean over rows lo..hi-1 (electrons) of a per-electron value (n, F): (F,)."""
  if not isinstance(u, Lap):
    return jnp.mean(u[lo:hi], axis=0)
  terms: list[Term] = []
  for t in u.terms:
    if isinstance(t, Own):  # d/dr_k for k in lo..hi-1 only
      rows_ = t.a[:, lo - t.first:hi - t.first]
      terms.append(Full(jnp.moveaxis(rows_, 1, 0) / (hi - lo), lo))
    elif isinstance(t, Full):
      terms.append(Full(jnp.mean(t.a[:, :, lo:hi], axis=2), t.first))
    else:
      raise TypeError('mean_rows of a pair value')
  return Lap(jnp.mean(u.v[lo:hi], axis=0), tuple(terms), jnp.mean(u.l[lo:hi], axis=0), u.n)


def mean_pairs(u: Value, lo: int, hi: int) -> Value:
  """The mean over the partners j = lo..hi-1 of a pair value (n, n, F): (n, F). Row i
  depends on electron i through every pair, and on each partner k through pair (i, k)."""
  if not isinstance(u, Lap):
    return jnp.mean(u[:, lo:hi], axis=1)
  t = _single(u)
  assert isinstance(t, Pair)
  terms = (Own(jnp.mean(t.a[0, :, :, lo:hi], axis=2)),
           Full(jnp.transpose(t.a[1, :, :, lo:hi], (2, 0, 1, 3)) / (hi - lo), lo))
  return Lap(jnp.mean(u.v[:, lo:hi], axis=1), terms, jnp.mean(u.l[:, lo:hi], axis=1), u.n)


def rows(u: Value, lo: int, hi: int) -> Value:
  """Rows lo..hi-1 (electrons) of a per-electron value."""
  if not isinstance(u, Lap):
    return u[lo:hi]
  t = _single(u)
  if isinstance(t, Pair):
    raise TypeError('rows of a pair value')
  t = type(t)(lax.slice_in_dim(t.a, lo, hi, axis=t.lead),
              t.first + lo if isinstance(t, Own) else t.first)
  return Lap(u.v[lo:hi], (t,), u.l[lo:hi], u.n)


def concat(parts: Sequence[Value], axis: int = -1) -> Value:
  """Values joined along an axis (counted in the value's shape)."""
  laps = [p for p in parts if isinstance(p, Lap)]
  if not laps:
    return jnp.concatenate(parts, axis=axis)  # type: ignore[arg-type]
  assert len(laps) == len(parts), 'concat: all parts carriers, or none'
  n, axis = laps[0].n, axis % laps[0].v.ndim
  v = jnp.concatenate([p.v for p in laps], axis=axis)
  l = jnp.concatenate([p.l for p in laps], axis=axis)
  singles = [_single(p) for p in laps]
  t = singles[0]
  # one term of the parts' kind, unless joined along an axis that counts electrons
  if len({_key(s) for s in singles}) == 1 and not isinstance(t, Full) and axis >= t.lead:
    a = jnp.concatenate([s.a for s in singles], axis=axis + t.lead)
    return Lap(v, (type(t)(a, t.first),), l, n)
  return Lap(v, (Full(jnp.concatenate([_full(p) for p in laps], axis=axis + 2)),), l, n)


def pair_differences(pos: Value) -> Value:
  """r_i - r_j (n, n, 3) from positions (n, 3); r_i - r_i = 0 is a constant (a Pair's
  entries i = i must be: its rules treat d/dr_i and d/dr_j as independent)."""
  if not isinstance(pos, Lap):
    return pos[:, None, :] - pos[None, :, :]
  n, dt = pos.n, pos.v.dtype
  off = (1.0 - jnp.eye(n, dtype=dt))[None, :, :, None]
  d = jnp.eye(3, dtype=dt)[:, None, None, :] * off  # (3, n, n, 3)
  return Lap(pos.v[:, None, :] - pos.v[None, :, :], (Pair(jnp.stack([d, -d])),),
             jnp.zeros((n, n, 3), dt), n)


def sum_pairs(u: Value, weights: Const) -> Value:
  """sum_ij weights_ij u_ij of a pair value (n, n): a scalar."""
  if not isinstance(u, Lap):
    return jnp.sum(weights * u)
  t = _single(u)
  assert isinstance(t, Pair)
  a = jnp.einsum('kj,ckj->kc', weights, t.a[0]) + jnp.einsum('ik,cik->kc', weights, t.a[1])
  return Lap(jnp.sum(weights * u.v), (Full(a),), jnp.sum(weights * u.l), u.n)


def einsum(spec: str, u: Value, w: Value) -> Value:
  """The bilinear product jnp.einsum(spec, u, w) of two values (attention)."""
  if not isinstance(u, Lap) and not isinstance(w, Lap):
    return jnp.einsum(spec, u, w)
  n = u.n if isinstance(u, Lap) else w.n  # type: ignore[union-attr]
  u, w = (p if isinstance(p, Lap) else Lap(p, (), jnp.zeros_like(p), n) for p in (u, w))
  (s_u, s_w), out = spec.split('->')[0].split(','), spec.split('->')[1]
  d = ''.join([x for x in string.ascii_letters if x not in spec][:2])  # the (n, 3) axes
  a_u, a_w = _full(u), _full(w)
  a = (jnp.einsum(f'{d}{s_u},{s_w}->{d}{out}', a_u, w.v)
       + jnp.einsum(f'{s_u},{d}{s_w}->{d}{out}', u.v, a_w))
  l = (jnp.einsum(spec, u.l, w.v) + jnp.einsum(spec, u.v, w.l)
       + 2.0 * jnp.einsum(f'{d}{s_u},{d}{s_w}->{out}', a_u, a_w))
  return Lap(jnp.einsum(spec, u.v, w.v), (Full(a),), l, n)


def softmax(u: Value) -> Value:
  """Softmax over the last axis: w = e^u / sum e^u,  J_w = w (J - <J>),
  l_w = w (l - <l> + sum_c (J_c - <J_c>)^2 - <(J_c - <J_c>)^2>), <.> weighted by w."""
  if not isinstance(u, Lap):
    return jax.nn.softmax(u, axis=-1)
  w = jax.nn.softmax(u.v, axis=-1)
  a = _full(u)
  centred = a - jnp.sum(w * a, axis=-1, keepdims=True)
  spread = jnp.sum(centred * centred, axis=(0, 1))
  l = w * (u.l - jnp.sum(w * u.l, axis=-1, keepdims=True) + spread
           - jnp.sum(w * spread, axis=-1, keepdims=True))
  return Lap(w, (Full(w * centred),), l, u.n)


def slogdet(u: Value) -> tuple[Array, Value]:
  """(sign, log|det A|) of matrices A (D, m, m). Carriers: with B_c = dA_c A^-1 (one
  (3N m, m) x (m, m) product per determinant), grad_c = tr B_c, lap = tr(l_A A^-1) -
  sum_c tr(B_c B_c); traces as sums of elementwise products (3x faster on CPU)."""
  if not isinstance(u, Lap):
    sign, logdet = jnp.linalg.slogdet(u)
    return sign, logdet
  a, n = u.v, u.n
  n_det, m = a.shape[0], a.shape[-1]
  a_j = jnp.moveaxis(_full(u).reshape(3 * n, n_det, m, m), 0, 1)  # (D, 3N, m, m)
  sign, logdet = jnp.linalg.slogdet(a)
  inv = jnp.linalg.inv(a)
  inv_t = jnp.swapaxes(inv, -1, -2)
  b = (a_j.reshape(n_det, 3 * n * m, m) @ inv).reshape(a_j.shape)
  grad = jnp.sum(a_j * inv_t[:, None], axis=(-2, -1))  # (D, 3N)
  lap = (jnp.sum(u.l * inv_t, axis=(-2, -1))
         - jnp.sum(b * jnp.swapaxes(b, -1, -2), axis=(1, 2, 3)))
  return sign, Lap(logdet, (Full(grad.T.reshape(n, 3, n_det)),), lap, n)


def logdet_sum(signs: Array, logdets: Value) -> tuple[Array, Value]:
  """(sign, log|sum_d sign_d exp(logdet_d)|) over the last axis, in log domain. For
  carriers, with weights w_d = psi_d / psi (summing to one): grad = sum_d w_d g_d and
  lap = sum_d w_d (lap_d + |g_d|^2) - |grad|^2."""
  v = logdets.v if isinstance(logdets, Lap) else logdets
  shift = jnp.max(v, axis=-1, keepdims=True)
  total = jnp.sum(signs * jnp.exp(v - shift), axis=-1)
  sign, logabs = jnp.sign(total), jnp.log(jnp.abs(total)) + shift[..., 0]
  if not isinstance(logdets, Lap):
    return sign, logabs
  a = _full(logdets)  # (n, 3, ..., D)
  weights = signs * sign[..., None] * jnp.exp(v - logabs[..., None])
  grad = jnp.sum(weights * a, axis=-1)  # (n, 3, ...)
  lap = (jnp.sum(weights * (logdets.l + jnp.sum(a * a, axis=(0, 1))), axis=-1)
         - jnp.sum(grad * grad, axis=(0, 1)))
  return sign, Lap(logabs, (Full(grad),), lap, logdets.n)
