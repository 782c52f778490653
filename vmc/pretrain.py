"""Pretraining: fit the network's orbitals to Hartree-Fock orbitals from PySCF.

For every determinant d and walker, the network's orbital matrix Phi^d[i, k] is fitted in
least squares to the HF matrix (phi_k(r_i) for the occupied orbitals of each spin). With
dense determinants the target is block diagonal, [[Phi_up, 0], [0, Phi_down]], so that each
dense determinant starts as the HF Slater determinant. Walkers meanwhile follow Metropolis
moves on |psi_HF|^2 (or a mixture with the network, `pretrain.hf_sample_weight`), so that
training starts from equilibrated walkers.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from vmc import mcmc, parallel, systems, writers
from vmc.errors import ConfigError

PRETRAIN_COLUMNS = ('step', 'loss', 'pmove', 'move_width', 'wall_time')
_CACHE = 'hf_orbitals.npz'


@dataclasses.dataclass
class HartreeFock:
  """A converged SCF solution and its occupied orbitals at arbitrary points."""
  mol: object  # pyscf.gto.Mole
  mo_coeff: np.ndarray  # (2, n_ao, n_mo): spin up, spin down
  energy: float  # hartree
  method: str  # 'RHF', 'UHF' or 'ROHF'
  nspins: tuple[int, int]

  def orbitals(self, x: np.ndarray) -> list[np.ndarray]:
    """Occupied orbitals at the electrons of each spin.

    x: (batch, n_electrons * 3) in bohr. Returns [(batch, n_up, n_up), (batch, n_down,
    n_down)], entry [b, i, k] = phi_k(r_i) for the i-th electron of that spin.
    """
    x = np.asarray(x, np.float64)
    batch = x.shape[0]
    pos = x.reshape(batch, -1, 3)
    out = []
    start = 0
    for spin, n_s in enumerate(self.nspins):
      coords = pos[:, start:start + n_s].reshape(-1, 3)
      ao = self.mol.eval_gto('GTOval_sph', coords) if n_s else np.zeros((0, 1))
      mo = ao @ self.mo_coeff[spin][:, :n_s] if n_s else np.zeros((0, 0))
      out.append(mo.reshape(batch, n_s, n_s).astype(np.float32))
      start += n_s
    return out


def _molecule(system: systems.System, basis: str):
  from pyscf import gto
  try:
    return gto.M(atom=[(a.symbol, a.coords) for a in system.atoms], unit='bohr',
                 basis=basis, charge=system.charge, spin=system.spin, verbose=0)
  except Exception as e:  # PySCF raises several types for a missing basis or element.
    raise ConfigError(
        f'pretrain.basis={basis!r} cannot be built for {system.name} '
        f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}); choose a basis '
        "that covers every element (e.g. 'ccpvdz', 'sto-3g') or pretrain.method='none'"
        ) from None


def check_basis(system: systems.System, basis: str) -> None:
  """Raises ConfigError now if PySCF cannot build `basis` for the system."""
  _molecule(system, basis)


def hartree_fock(system: systems.System, basis: str, open_shell: str = 'uhf',
                 cache_dir: str | None = None) -> HartreeFock:
  """RHF for closed shells, UHF/ROHF for open shells, loaded from `cache_dir` if there.

  In a multi-process run, process 0 solves (and caches) and the others receive its
  orbitals, so every process fits the same targets.
  """
  mol = _molecule(system, basis)
  method = 'RHF' if system.spin == 0 else open_shell.upper()
  if method not in ('RHF', 'UHF', 'ROHF'):
    raise ConfigError(f"pretrain.open_shell={open_shell!r} is not known; use 'uhf' or 'rohf'")
  mo_coeff, energy = parallel.on_main(
      lambda: _solve_or_load(mol, system.name, basis, method, cache_dir))
  return HartreeFock(mol, mo_coeff, energy, method, tuple(system.electrons))


def _solve_or_load(mol, name: str, basis: str, method: str, cache_dir: str | None):
  """(mo_coeff (2, n_ao, n_mo), energy) from the cache in cache_dir, else from PySCF."""
  from pyscf import scf
  cache = os.path.join(cache_dir, _CACHE) if cache_dir else None
  if cache and os.path.exists(cache):
    with np.load(cache) as data:
      if str(data['basis']) == basis and str(data['method']) == method and (
          data['mo_coeff'].shape[1] == mol.nao):
        logging.info('Hartree-Fock orbitals loaded from %s (%s/%s, E = %.6f Ha)', cache,
                     method, basis, float(data['energy']))
        return np.asarray(data['mo_coeff']), float(data['energy'])
  solver = {'RHF': scf.RHF, 'UHF': scf.UHF, 'ROHF': scf.ROHF}[method]
  t0 = time.time()
  mf = solver(mol)
  energy = float(mf.kernel())
  if not mf.converged:
    mf = mf.newton()  # second-order SCF rescues most slow or oscillating cases
    energy = float(mf.kernel())
  if not mf.converged:
    raise ConfigError(
        f'PySCF {method}/{basis} did not converge for {name}; try another '
        "pretrain.basis, pretrain.open_shell='rohf', or pretrain.method='none'")
  mo = np.asarray(mf.mo_coeff)
  mo_coeff = np.stack([mo, mo]) if mo.ndim == 2 else mo
  logging.info('Hartree-Fock %s/%s energy %.6f Ha (%.1f s)', method, basis, energy,
               time.time() - t0)
  if cache:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = cache + '.tmp.npz'
    np.savez(tmp, mo_coeff=mo_coeff, energy=energy, basis=basis, method=method)
    os.replace(tmp, cache)
  return mo_coeff, energy


def make_hf_callback(hf: HartreeFock) -> Callable:
  """HF orbitals as a JAX function (a host callback) of x: (batch, 3N)."""
  def fn(x):
    shapes = [jax.ShapeDtypeStruct((x.shape[0], n, n), jnp.float32) for n in hf.nspins]
    return jax.pure_callback(lambda y: hf.orbitals(y), shapes, x)
  return fn


def hf_logabs(blocks) -> jnp.ndarray:
  """log|det Phi_up det Phi_down| of the HF Slater determinant, per walker."""
  total = 0.0
  for block in blocks:
    if block.shape[-1]:
      total = total + jnp.linalg.slogdet(block)[1]
  return total


def target_orbitals(hf_blocks, full_det: bool, nspins) -> list[jnp.ndarray]:
  """The network-shaped targets: one block-diagonal (N, N) matrix, or the spin blocks."""
  hf_blocks = [b for b, n in zip(hf_blocks, nspins) if n]
  if not full_det or len(hf_blocks) == 1:
    return hf_blocks
  up, down = hf_blocks
  batch, n_up, n_down = up.shape[0], up.shape[1], down.shape[1]
  top = jnp.concatenate([up, jnp.zeros((batch, n_up, n_down), up.dtype)], axis=-1)
  bottom = jnp.concatenate([jnp.zeros((batch, n_down, n_up), up.dtype), down], axis=-1)
  return [jnp.concatenate([top, bottom], axis=1)]


def make_pretrain_step(network, batch_logabs, hf: HartreeFock, cfg: ml_collections.ConfigDict):
  """Returns a pmapped step (params, opt_state, walkers, key, width) -> (..., stats)."""
  full_det = bool(cfg.network.full_det)
  nspins = tuple(hf.nspins)
  w = float(cfg.pretrain.hf_sample_weight)
  hf_fn = make_hf_callback(hf)
  tx = optax.adam(cfg.pretrain.lr)

  def batch_net_orbitals(params, x):
    blocks = jax.vmap(network.orbitals, in_axes=(None, 0))(params, x)
    if full_det and len(blocks) == 2:
      blocks = [jnp.concatenate(blocks, axis=2)]  # (batch, det, N, N)
    return blocks

  def sample_logabs(params, x):
    """log of the sampling amplitude: w |psi_HF| + (1 - w) |psi_net|."""
    log_hf = hf_logabs(hf_fn(x))
    if w >= 1.0:
      return log_hf
    log_net = batch_logabs(params, x)
    if w <= 0.0:
      return log_net
    return jnp.logaddexp(jnp.log(w) + log_hf, jnp.log1p(-w) + log_net)

  mcmc_step = mcmc.make_mcmc_step(sample_logabs, cfg.mcmc.steps)

  def loss_fn(params, x, targets):
    blocks = batch_net_orbitals(params, x)
    return sum(jnp.mean((b - t[:, None]) ** 2) for b, t in zip(blocks, targets))

  def step(params, opt_state, x, key, width):
    walkers = mcmc.Walkers(x, sample_logabs(params, x))
    walkers, pmove = mcmc_step(params, walkers, key, width)
    pmove = parallel.pmean(pmove)
    targets = target_orbitals(hf_fn(walkers.x), full_det, nspins)
    loss, grads = jax.value_and_grad(loss_fn)(params, walkers.x, targets)
    updates, opt_state = tx.update(parallel.pmean(grads), opt_state, params)
    params = optax.apply_updates(params, updates)
    new_width = mcmc.adapt_width(width, pmove, cfg.mcmc.target_acceptance)
    return params, opt_state, walkers.x, new_width, parallel.pmean(loss), pmove

  return parallel.pmap(step, donate_argnums=(0, 1, 2)), parallel.pmap(tx.init)


def run(state, network, batch_logabs, hf: HartreeFock, cfg: ml_collections.ConfigDict,
        save_path: str):
  """Pretrains `state.params` and moves `state.walkers`; writes pretrain_stats.csv."""
  n = int(cfg.pretrain.iterations)
  step, init = make_pretrain_step(network, batch_logabs, hf, cfg)
  params, x, width = state.params, state.walkers.x, state.width
  opt_state = init(params)
  key = state.key
  progress = writers.Progress(n, cfg.log.print_every_seconds, label='pretrain')
  t_start = time.time()
  with writers.CsvWriter(os.path.join(save_path, 'pretrain_stats.csv'), PRETRAIN_COLUMNS,
                         enabled=parallel.is_main()) as out:
    for t in range(n):
      key, sub = _split(key)
      used_width = width
      params, opt_state, x, width, loss, pmove = step(params, opt_state, x, sub, width)
      loss, pmove, used = (float(v) for v in parallel.first((loss, pmove, used_width)))
      row = dict(step=t, loss=loss, pmove=pmove, move_width=used,
                 wall_time=time.time() - t_start)
      out.write(row)
      progress.update(t, f'loss={loss:.3e}  pmove={pmove:.2f}  width={used:.3f}')
      if not np.isfinite(loss):
        raise FloatingPointError(f'pretraining loss is {loss} at step {t}')
  walkers = mcmc.Walkers(x, parallel.pmap(batch_logabs)(params, x))
  return state._replace(params=params, walkers=walkers, width=width, key=key)


_split = parallel.pmap(lambda k: tuple(jax.random.split(k)))
