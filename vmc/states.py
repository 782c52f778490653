"""Excited states by natural excited states VMC (NES-VMC: Pfau, Axelrod, Sutterud, von
Glehn and Spencer, Science 385, eadn0137, 2024).

K states psi_1..psi_K of N electrons are trained together as one wavefunction of K
copies x^1..x^K of the electrons (a walker of K N electrons):

  Psi(x^1, ..., x^K) = det M,   M[j, i] = psi_i(x^j)      (row: copy, column: state)

Sampling |Psi|^2 and minimising the trace of the local energy matrix

  E_L(x) = M^-1 (H M),   (H M)[j, i] = (H psi_i)(x^j) = M[j, i] e_i(x^j),
  e_i = (H psi_i) / psi_i (the ordinary local energy of state i at copy j),

finds the span of the K lowest states: if the psi_i span eigenstates, E_L is the same
matrix at every x, with the eigenvalues E_1..E_K. In general <E_L> = S^-1 H in the basis
of the psi_i (S their overlaps), so the state energies are the eigenvalues of the mean
matrix, and its eigenvectors make the psi_i into the states. An operator O that multiplies
(the dipole d = -sum_electrons r) gives O_L = M^-1 diag(o(x^j)) M the same way; in the
eigenbasis U of <E_L>, U^-1 <O_L> U has (O_0k O_k0) = |<0|O|k>|^2 / (<0|0> <k|k>), which
gives the oscillator strengths f_0k = 2/3 (E_k - E_0) sum_c |<0|d_c|k>|^2 with no
normalisation of the states needed.

Numerics: M is scaled row by row (copy j by max_i |psi_i(x^j)|), which leaves M^-1 (H M)
and M^-1 D M unchanged and keeps every entry representable in float32; log|Psi| is
log|det of the scaled M| plus the row scales.

The functions on one walker (`total`, `energy_matrix`, `dipole_matrices`) run inside the
compiled step; `analyse` is the host's: eigenvalues of mean matrices, with errors from a
jackknife over blocks of iterations (the eigenvalues of a noisy matrix are biased and
correlated, so the errors of E_k and E_k - E_0 come from the same leave-one-block-out
eigenvalues, not from separate error bars).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vmc.types import Array, Params

EV_PER_HARTREE = 27.211386245988  # CODATA 2018
# (params, x (3N,)) -> (signs (K,), log|psi_i| (K,)) of one copy of the electrons
StateFn = Callable[[Params, Array], tuple[Array, Array]]


def copies(x: Array, k: int) -> Array:
  """A walker of K N electrons (K * 3N,) as its K copies (K, 3N)."""
  return x.reshape(k, -1)


def state_matrix(state_apply: StateFn, params: Params, x: Array,
                 k: int) -> tuple[Array, Array]:
  """(sign, log|psi_i(x^j)|), each (K, K) with [j, i] = copy j, state i."""
  return jax.vmap(state_apply, in_axes=(None, 0))(params, copies(x, k))


def scaled(sign: Array, logabs: Array) -> tuple[Array, Array]:
  """(M scaled by rows to max |entry| 1, the log of each row's scale (K,))."""
  shift = jnp.max(logabs, axis=-1)
  return sign * jnp.exp(logabs - shift[..., None]), shift


def log_det(sign: Array, logabs: Array) -> tuple[Array, Array]:
  """(sign, log|det M|) of M given entrywise in log form."""
  m, shift = scaled(sign, logabs)
  s, ld = jnp.linalg.slogdet(m)
  return s, ld + jnp.sum(shift, axis=-1)


def total(state_apply: StateFn, k: int) -> Callable[[Params, Array], tuple[Array, Array]]:
  """(params, x (K * 3N,)) -> (sign, log|Psi|) of the total wavefunction det M."""

  def apply(params: Params, x: Array) -> tuple[Array, Array]:
    return log_det(*state_matrix(state_apply, params, x, k))

  return apply


def energy_matrix(sign: Array, logabs: Array, e: Array) -> Array:
  """E_L = M^-1 (M * e) (K, K), e[j, i] the local energy of state i at copy j."""
  m, _ = scaled(sign, logabs)
  return jnp.linalg.solve(m, m * e)


def dipole_matrices(sign: Array, logabs: Array, x: Array) -> Array:
  """(3, K, K): M^-1 diag(d_c(x^j)) M for the electronic dipole d = -sum_i r_i of each
  copy (the nuclei's part is a multiple of the identity: no transition dipole)."""
  k = sign.shape[0]
  d = -jnp.sum(copies(x, k).reshape(k, -1, 3), axis=1)  # (K copies, 3)
  m, _ = scaled(sign, logabs)
  rhs = jnp.moveaxis(d, -1, 0)[:, :, None] * m[None]  # (3, K, K)
  return jnp.linalg.solve(m[None], rhs)


def spin_matrix(state_apply: StateFn, params: Params, x: Array, k: int,
                nspins: tuple[int, int]) -> Array:
  """(K, K): S^2_L = M^-1 (S^2 M) of the spin-assigned states (first n_up electrons up):
  (S^2 psi)(x) = [S_z (S_z + 1) + n_down] psi(x) - sum_{a up, b down} psi(x with r_a and
  r_b swapped), so S^2_L = [S_z (S_z + 1) + n_down] I - M^-1 P, P[j, i] the swapped sum of
  state i at copy j (n_up n_down more evaluations of every copy)."""
  n_up, n_down = nspins
  sign, logabs = state_matrix(state_apply, params, x, k)
  m, shift = scaled(sign, logabs)
  pos = copies(x, k).reshape(k, n_up + n_down, 3)
  swapped_sum = jnp.zeros_like(m)
  for a in range(n_up):
    for b in range(n_up, n_up + n_down):
      moved = pos.at[:, a].set(pos[:, b]).at[:, b].set(pos[:, a]).reshape(k, -1)
      s, log_moved = jax.vmap(state_apply, in_axes=(None, 0))(params, moved)
      swapped_sum = swapped_sum + s * jnp.exp(log_moved - shift[:, None])
  sz = 0.5 * (n_up - n_down)
  return (sz * (sz + 1) + n_down) * jnp.eye(k, dtype=m.dtype) - jnp.linalg.solve(
      m, swapped_sum)


# ----------------------------------------------------------------------------------------
# Host side: from the series of mean matrices to energies with error bars.


def eigen(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(energies ascending (K,), right eigenvectors as columns) of a mean energy matrix; a
  complex pair from noise is reported by its real part."""
  values, vectors = np.linalg.eig(np.asarray(matrix, np.float64))
  order = np.argsort(values.real)
  return values.real[order], vectors[:, order]


def oscillator_strengths(energy: np.ndarray, dipoles: np.ndarray) -> np.ndarray:
  """f_0k (K,) (f_00 = 0) from a mean energy matrix (K, K) and mean dipole matrices
  (3, K, K), all in atomic units."""
  values, u = eigen(energy)
  inv = np.linalg.inv(u)
  d = np.stack([inv @ np.asarray(dc, np.float64) @ u for dc in dipoles])
  squared = np.sum((d[:, 0, :] * d[:, :, 0]).real, axis=0)
  return 2.0 / 3.0 * (values - values[0]) * squared


def in_eigenbasis(energy: np.ndarray, operator: np.ndarray) -> np.ndarray:
  """diag(U^-1 O U) (K,): each state's expectation of an operator whose mean matrix is O,
  U the eigenvectors of the mean energy matrix (ascending energies)."""
  _, u = eigen(energy)
  return np.real(np.diag(np.linalg.inv(u) @ np.asarray(operator, np.float64) @ u))


class Estimate(NamedTuple):
  energies: np.ndarray  # (K,) hartree, ascending
  energy_errors: np.ndarray  # (K,)
  excitations: np.ndarray  # (K,) E_k - E_0, hartree (0 for k = 0)
  excitation_errors: np.ndarray  # (K,)
  oscillator_strengths: np.ndarray | None  # (K,) f_0k
  oscillator_errors: np.ndarray | None
  s2: np.ndarray | None  # (K,) <S^2> of each state
  s2_errors: np.ndarray | None
  blocks: int  # blocks of the jackknife


def _jackknife(samples: np.ndarray) -> np.ndarray:
  """Error of a statistic from its B leave-one-block-out values (B, ...)."""
  b = samples.shape[0]
  return np.sqrt((b - 1) / b * np.sum((samples - samples.mean(0)) ** 2, axis=0))


def analyse(energy: np.ndarray, dipoles: np.ndarray | None = None,
            spins: np.ndarray | None = None, blocks: int = 20) -> Estimate:
  """State energies, excitation energies, oscillator strengths and <S^2> from a series
  of per-iteration mean matrices: energy (T, K, K), dipoles (T, 3, K, K) or None, spins
  (T, K, K) or None.

  The estimates are the eigen-analysis of the means over all T iterations; their errors a
  jackknife over `blocks` consecutive blocks (fewer when T is short; none below 2
  blocks: NaN). Blocks of T / blocks iterations should be longer than the energy's
  autocorrelation time (a few tens of iterations is typical). No iterations (T = 0, all
  rejected): every estimate NaN.
  """
  energy = np.asarray(energy, np.float64)
  t = energy.shape[0]
  if t == 0:  # every iteration was rejected: nothing to estimate, all NaN
    nan = np.full(energy.shape[-1], np.nan)
    return Estimate(nan, nan, nan, nan, None if dipoles is None else nan,
                    None if dipoles is None else nan, None if spins is None else nan,
                    None if spins is None else nan, 0)
  values = eigen(energy.mean(0))[0]
  extras = {'osc': (dipoles, oscillator_strengths), 's2': (spins, in_eigenbasis)}
  means = {name: None if series is None else fn(energy.mean(0), np.mean(series, 0))
           for name, (series, fn) in extras.items()}
  b = min(blocks, t)
  if b < 2:
    nan = np.full_like(values, np.nan)
    return Estimate(values, nan, values - values[0], nan, means['osc'],
                    None if dipoles is None else nan, means['s2'],
                    None if spins is None else nan, b)
  edges = np.linspace(0, t, b + 1).astype(int)

  def left_out(series: np.ndarray) -> np.ndarray:
    """The means over all iterations but one block's, for each block (B, ...)."""
    series = np.asarray(series, np.float64)
    sums = np.stack([series[lo:hi].sum(0) for lo, hi in zip(edges[:-1], edges[1:],
                                                             strict=True)])
    counts = np.diff(edges).reshape((-1,) + (1,) * (series.ndim - 1))
    return (series.sum(0)[None] - sums) / (t - counts)

  left_e = left_out(energy)
  jk_values = np.stack([eigen(m)[0] for m in left_e])
  errors = {name: None if series is None else _jackknife(np.stack(
      [fn(e, o) for e, o in zip(left_e, left_out(series), strict=True)]))
      for name, (series, fn) in extras.items()}
  return Estimate(values, _jackknife(jk_values), values - values[0],
                  _jackknife(jk_values - jk_values[:, :1]), means['osc'], errors['osc'],
                  means['s2'], errors['s2'], b)


def to_ev(hartree: float | np.ndarray) -> float | np.ndarray:
  return hartree * EV_PER_HARTREE
