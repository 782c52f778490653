"""Forces on the nuclei, F_I = -dE/dR_I, in hartree/bohr, by three estimators.

With V the Coulomb potential (vmc.hamiltonian), d_iI = r_i - R_I and r_iI = |d_iI|:

  hf    Hellmann-Feynman, F = <-dV/dR_I>:
          f_hf = Z_I sum_i d_iI / r_iI^3 + F_nn,   F_nn = Z_I sum_J Z_J (R_I - R_J) / R_IJ^3
        Its variance is infinite (1/r^2 at the nucleus).
  zv    zero-variance (Assaraf and Caffarel, J. Chem. Phys. 119, 10536 (2003)): f_hf minus
        (H - E_L)(Q psi) / psi, which has zero mean under |psi|^2 for any real psi and
        any Q (H is Hermitian). With Q_I = Z_I sum_i d_iI / r_iI, -1/2 lap Q cancels the
        singular electron term and
          f_zv = Z_I sum_i [g_i / r_iI - d_iI (d_iI . g_i) / r_iI^3] + F_nn,
        g_i = grad_i log|psi|; the same mean as hf, zero for the exact hydrogen atom.
  zvzb  zero-variance zero-bias: the derivative of the variational energy itself,
          -dE/dR_I = <f_zv> - 2 <(E_L - E) d log|psi| / dR_I>
        (the Pulay term; d log|psi| / dR_I by automatic differentiation through the
        network with the nuclei as inputs, parameters fixed). At the optimum of the
        parameters it is the exact force of the wavefunction's energy surface; hf and zv
        miss the Pulay term, which is not small for a finite network.

Per iteration the estimates are means over all walkers of all devices; the zvzb
covariance is taken within the iteration (its 1/batch bias is removed by n/(n-1)).
Error bars come from reblocking the per-iteration values (vmc.statistics).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vmc import nuclei, parallel
from vmc.types import Array, Params

ESTIMATORS = ('hf', 'zv', 'zvzb')
UNITS = 'hartree/bohr'

# (params, x (3N,), atoms (n_atoms, 3)) -> (sign, log|psi|)
WavefunctionAt = Callable[[Params, Array, Array], tuple[Array, Array]]


def electron_terms(x: Array, grad_log: Array, atoms: Array,
                   charges: Array) -> tuple[Array, Array]:
  """The electronic parts of f_hf and f_zv for one walker: two (n_atoms, 3) arrays.

  x and grad_log (grad of log|psi|) are (3N,); atoms (n_atoms, 3); charges (n_atoms,).
  """
  pos = x.reshape(-1, 3)
  g = grad_log.reshape(-1, 3)
  d = pos[:, None, :] - atoms[None, :, :]  # (n, n_atoms, 3)
  r = jnp.linalg.norm(d, axis=-1)[..., None]
  hf = charges[:, None] * jnp.sum(d / r ** 3, axis=0)
  dg = jnp.sum(d * g[:, None, :], axis=-1, keepdims=True)
  zv = charges[:, None] * jnp.sum(g[:, None, :] / r - d * dg / r ** 3, axis=0)
  return hf, zv


def make(wavefunction_at: WavefunctionAt, local_energy: Callable[[Params, Array], Array],
         atoms: np.ndarray, charges: np.ndarray) -> Callable[[Params, Array], dict[str, Array]]:
  """Returns estimate(params, x) -> {'forces_hf', 'forces_zv', 'forces_zvzb'}, each
  (n_atoms, 3) averaged over all walkers of all devices (call inside pmap).

  wavefunction_at(params, x, atoms) -> (sign, log|psi|) of one walker with the nuclei at
  `atoms`; local_energy(params, x (batch, 3N)) -> (batch,), unclipped.
  """
  atoms_j = jnp.asarray(atoms, jnp.float32)
  charges_j = jnp.asarray(charges, jnp.float32)
  f_nn = jnp.asarray(nuclei.forces(atoms, charges), jnp.float32)
  logabs = lambda params, x, at: wavefunction_at(params, x, at)[1]
  # One reverse pass gives both grad_x log|psi| and d log|psi| / dR.
  grads = jax.grad(logabs, argnums=(1, 2))

  def per_walker(params: Params, x: Array) -> tuple[Array, Array, Array]:
    g_x, g_atoms = grads(params, x, atoms_j)
    hf, zv = electron_terms(x, g_x, atoms_j, charges_j)
    return hf, zv, g_atoms

  def estimate(params: Params, x: Array) -> dict[str, Array]:
    hf, zv, d_log = jax.vmap(per_walker, in_axes=(None, 0))(params, x)
    e_l = local_energy(params, x)
    n = x.shape[0] * jax.lax.psum(1, parallel.AXIS)  # walkers on all devices
    mean_e = parallel.pmean(jnp.mean(e_l))
    # cov(E_L, d) = mean((E_L - mean E_L) d): the centring of d drops out.
    cov = parallel.pmean(jnp.mean((e_l - mean_e)[:, None, None] * d_log, axis=0))
    f_zv = parallel.pmean(jnp.mean(zv, axis=0)) + f_nn
    return {'forces_hf': parallel.pmean(jnp.mean(hf, axis=0)) + f_nn,
            'forces_zv': f_zv,
            'forces_zvzb': f_zv - 2.0 * cov * n / (n - 1)}

  return estimate
