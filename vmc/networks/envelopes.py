"""Multiplicative envelopes that make orbitals decay away from the nuclei.

For electron i, nucleus I and orbital column k:

  isotropic:  env_ik = sum_I pi_Ik exp(-sigma_Ik |r_i - R_I|)
  diagonal:   env_ik = sum_I pi_Ik exp(-|sigma_I:k * (r_i - R_I)|)   (one decay per axis)

Columns k run over determinants x orbitals (each determinant its own envelope), or over
orbitals only when `shared` (one envelope per orbital, the same in every determinant; the
values are then tiled over determinants). Parameters start at one, as in FermiNet.

`derivatives` gives each envelope's value, gradient and Laplacian with respect to its own
electron, for the forward Laplacian.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def _scaled_distance(ae: jnp.ndarray, r_ae: jnp.ndarray, sigma: jnp.ndarray,
                     kind: str) -> jnp.ndarray:
  """y_iIk, the argument of the exponential. ae (n, A, 3), r_ae (n, A)."""
  if kind == 'isotropic':
    return r_ae[:, :, None] * sigma[None]  # sigma (A, K)
  return jnp.linalg.norm(ae[:, :, :, None] * sigma[None], axis=2)  # sigma (A, 3, K)


def _tile(a: jnp.ndarray, determinants: int) -> jnp.ndarray:
  """(..., K) -> (..., determinants * K), K fastest (the orbital layout of the networks)."""
  return jnp.tile(a, (1,) * (a.ndim - 1) + (determinants,))


class Envelope(nn.Module):
  """(n_s, determinants * n_orbitals) envelope values for one spin channel's electrons."""
  kind: str
  n_orbitals: int
  determinants: int
  shared: bool = False

  @nn.compact
  def __call__(self, ae: jnp.ndarray, r_ae: jnp.ndarray) -> jnp.ndarray:
    n_atoms = r_ae.shape[-1]
    k = self.n_orbitals * (1 if self.shared else self.determinants)
    pi = self.param('pi', nn.initializers.ones, (n_atoms, k))
    shape = (n_atoms, k) if self.kind == 'isotropic' else (n_atoms, 3, k)
    sigma = self.param('sigma', nn.initializers.ones, shape)
    env = jnp.sum(pi[None] * jnp.exp(-_scaled_distance(ae, r_ae, sigma, self.kind)), axis=1)
    return _tile(env, self.determinants) if self.shared else env


def derivatives(ae: jnp.ndarray, r_ae: jnp.ndarray, params: dict, kind: str, shared: bool,
                determinants: int, lap_r: jnp.ndarray | None = None
                ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Envelope of each electron's orbitals and its derivatives with respect to that electron.

  Returns value (n, K), gradient (3, n, K) and Laplacian (n, K) with K = determinants x
  orbitals. With e_Ik = pi_Ik exp(-y_Ik) and g = grad y: grad e = -e g and
  lap e = e (|g|^2 - lap y), where lap y = sigma lap r (isotropic: lap r = 2 / r, or
  `lap_r` for a softened distance, ferminet.features) or (sum_c sigma_c^2 - |g|^2) / y
  (diagonal).
  """
  pi, sigma = params['pi'], params['sigma']
  y = _scaled_distance(ae, r_ae, sigma, kind)  # (n, A, K)
  e = pi[None] * jnp.exp(-y)
  if kind == 'isotropic':
    unit = ae / r_ae[..., None]  # (n, A, 3)
    grad_y = unit[:, :, :, None] * sigma[None, :, None, :]  # (n, A, 3, K)
    if lap_r is None:
      lap_y = 2.0 * sigma[None] / r_ae[:, :, None]
    else:
      lap_y = sigma[None] * lap_r[:, :, None]
  else:
    grad_y = ae[:, :, :, None] * sigma[None] ** 2 / y[:, :, None, :]
    lap_y = (jnp.sum(sigma ** 2, axis=1)[None] - jnp.sum(grad_y ** 2, axis=2)) / y
  value = jnp.sum(e, axis=1)
  grad = -jnp.einsum('iak,iack->cik', e, grad_y)
  lap = jnp.sum(e * (jnp.sum(grad_y ** 2, axis=2) - lap_y), axis=1)
  if shared:
    value, grad, lap = (_tile(a, determinants) for a in (value, grad, lap))
  return value, grad, lap
