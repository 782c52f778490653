"""vmc.networks.ops: every operation's derivative rules, on every kind of Jacobian term
(Own, Pair, Full) it meets, against automatic differentiation of the same function on
plain arrays, in float64 to 1e-10 relative (round-off of a few hundred operations is
1e-14). A new operation must get a case here: test_every_operation_is_checked fails
otherwise."""

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vmc.networks import ops

N_UP, N = 2, 4
ATOMS = np.array([[0.0, 0.0, 0.0], [0.3, -0.2, 1.4]])


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def _random(shape, seed):
  return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float64)


def _pos_ae_r(x):
  pos = x if isinstance(x, ops.Lap) else x.reshape(-1, 3)
  ae = ops.add(ops.rowwise(lambda p: p[:, None, :], pos), -jnp.asarray(ATOMS)[None])
  r2 = ops.sum(ops.square(ae), axis=-1)
  return pos, ae, r2, ops.sqrt(r2)


def _pairs(x):
  pos = x if isinstance(x, ops.Lap) else x.reshape(-1, 3)
  ee = ops.pair_differences(pos)
  eye = jnp.eye(N)
  r_ee = ops.mul(ops.sqrt(ops.sum(ops.square(ops.add(ee, eye[:, :, None])), axis=-1)),
                 1.0 - eye)
  return ee, r_ee


def _streams(x):
  """FermiNet-like streams: h1 (N, 6) Own, h2 (N, N, 4) Pair."""
  _, ae, _, r = _pos_ae_r(x)
  last = lambda u: ops.rowwise(lambda t: t[..., None], u)
  h1 = ops.rowwise(lambda t: t.reshape(N, -1)[:, :6], ops.concat([ae, last(r)]))
  ee, r_ee = _pairs(x)
  return h1, ops.concat([ee, last(r_ee)])


def _layer(x):
  """One mean-field layer (Own parts, walker-level Full means, partner means) and its
  tanh: a Full value."""
  h1, h2 = _streams(x)
  parts = [h1] + [p for lo, hi in ((0, N_UP), (N_UP, N))
                  for p in (ops.mean_rows(h1, lo, hi), ops.mean_pairs(h2, lo, hi))]
  return ops.tanh(ops.linear(parts, 0.4 * _random((6 + 2 * (6 + 4), 5), 1), _random((5,), 2)))


def _full_matrices(x):
  """(D=2, N, N) matrices with a Full Jacobian times an Own envelope."""
  h = _layer(x)
  _, _, _, r = _pos_ae_r(x)
  orb = ops.linear(h, 0.5 * _random((5, 2 * N), 3))
  env = ops.exp(ops.mul(ops.sum(r, axis=1, keepdims=True), -0.5))  # Own (N, 1)
  return ops.linear_map(lambda o: jnp.transpose(o.reshape(N, 2, N), (1, 0, 2)),
                        ops.mul(orb, env))


CASES = {
    'distances': lambda x: _pos_ae_r(x)[3],
    'exp, log1p, reciprocal, rsqrt, tanh, div, sub, mean': lambda x: (lambda r, r2, ae: ops.concat([
        ops.exp(ops.mul(r, -1.0)), ops.log1p(r), ops.reciprocal(ops.add(r, 0.5)),
        ops.rsqrt(ops.add(r2, 1.0)), ops.tanh(r), ops.sub(r, 1.0),
        ops.mean(ops.div(ae, ops.rowwise(lambda t: t[..., None], r)), axis=-1),
        ops.div(r, 2.0)], axis=1))(*(lambda p: (p[3], p[2], p[1]))(_pos_ae_r(x))),
    'pair distances and a pair sum': lambda x: ops.sum_pairs(
        ops.reciprocal(ops.add(_pairs(x)[1], 1.0)), np.triu(np.ones((N, N)), k=1)),
    'tanh of pairs, linear on pairs': lambda x: ops.tanh(ops.linear(
        _streams(x)[1], _random((4, 3), 4), _random((3,), 5))),
    'pair products': lambda x: ops.mul(_pairs(x)[1], ops.tanh(_pairs(x)[1])),
    'means over rows and partners': lambda x: ops.concat(
        [ops.linear_map(lambda t: jnp.broadcast_to(t, (N, 6)),
                        ops.mean_rows(_streams(x)[0], 0, N_UP)),
         ops.mean_pairs(_streams(x)[1], N_UP, N)]),
    'a mean-field layer': _layer,
    'means of a Full value, rows of it': lambda x: ops.concat(
        [ops.linear_map(lambda t: t[None], ops.mean_rows(_layer(x), N_UP, N)),
         ops.rows(_layer(x), 1, 2)], axis=0),
    'rows of an Own value, Own products': lambda x: ops.mul(
        ops.rows(_streams(x)[0], 1, 3), ops.rows(ops.tanh(_streams(x)[0]), 1, 3)),
    'Own times Own of other electrons': lambda x: ops.mul(
        ops.rows(_streams(x)[0], 0, 2), ops.rows(_streams(x)[0], 2, 4)),
    'Full times Own, Full times Full': lambda x: ops.add(
        ops.mul(_layer(x), ops.rowwise(lambda t: t[:, :5], _streams(x)[0])),
        ops.mul(_layer(x), ops.square(_layer(x)))),
    'attention: einsum, softmax': lambda x: (lambda q: ops.einsum(
        'hij,jhd->ihd', ops.softmax(ops.einsum('ihd,jhd->hij', q, ops.tanh(q))), q))(
        ops.rowwise(lambda t: t[:, :4].reshape(N, 2, 2), _layer(x))),
    'einsum with a constant': lambda x: ops.einsum('ij,jk->ik', _layer(x), _random((5, 2), 6)),
    'slogdet, logdet_sum': lambda x: ops.logdet_sum(*ops.slogdet(_full_matrices(x)))[1],
    'slogdet of concatenated blocks': lambda x: ops.slogdet(ops.concat(
        [ops.rowwise(lambda t: t[:, :N_UP], _full_matrices(x)),
         ops.rowwise(lambda t: t[:, N_UP:], _full_matrices(x))], axis=1))[1],
}


@pytest.mark.parametrize('name', list(CASES))
def test_the_carrier_gives_the_exact_gradient_and_laplacian(name):
  fn = CASES[name]
  x = 0.9 * _random((3 * N,), 7)
  flat = lambda y: jnp.reshape(fn(y), -1)
  lap_ref = jnp.trace(jax.hessian(flat)(x), axis1=-2, axis2=-1)
  grad_ref = jax.jacfwd(flat)(x)
  carried = fn(ops.seed(x))
  assert isinstance(carried, ops.Lap) and not isinstance(fn(x), ops.Lap)
  assert ops.shape(carried) == jnp.shape(fn(x)) and ops.dtype(carried) == jnp.float64
  if jnp.shape(fn(x)):
    assert ops.width(carried) == jnp.shape(fn(x))[-1]
  np.testing.assert_allclose(jnp.reshape(carried.v, -1), flat(x), rtol=1e-12, atol=1e-12)
  lap, grad = ops.derivatives(carried)
  scale = max(1.0, float(jnp.max(jnp.abs(lap_ref))))
  np.testing.assert_allclose(jnp.reshape(lap, -1), lap_ref, rtol=0, atol=1e-10 * scale)
  np.testing.assert_allclose(jnp.reshape(grad, (-1, 3 * N)), grad_ref, rtol=0,
                             atol=1e-10 * max(1.0, float(jnp.max(jnp.abs(grad_ref)))))
  assert float(jnp.max(jnp.abs(lap_ref))) > 1e-3  # not trivially zero


def test_every_operation_is_checked():
  """Each public function of vmc.networks.ops appears in a case above."""
  source = inspect.getsource(inspect.getmodule(test_every_operation_is_checked))
  public = [name for name, f in vars(ops).items() if inspect.isfunction(f)
            and not name.startswith('_') and f.__module__ == ops.__name__]
  elementwise = ['tanh', 'exp', 'log1p', 'sqrt', 'reciprocal', 'rsqrt']
  missing = [name for name in public + elementwise
             if not re.search(rf'ops\.{name}\(', source)]
  assert not missing, f'operations without a case in tests/test_ops.py: {missing}'
