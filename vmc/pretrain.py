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
import typing
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from vmc import loop, mcmc, parallel, runfolder, systems, writers
from vmc.config import Spec
from vmc.spec import PretrainSpec, SamplerSpec
from vmc.errors import ConfigError, RunAborted
from vmc.networks import Network
from vmc.types import Array, MCMCState, Params, PRNGKey, TrainState

PRETRAIN_COLUMNS = ('step', 'loss', 'pmove', 'move_width', 'wall_time')
_CACHE = 'hf_orbitals.npz'


@dataclasses.dataclass
class HartreeFock:
  """A converged SCF solution and its occupied orbitals at arbitrary points."""
  mol: Any  # pyscf.gto.Mole
  mo_coeff: np.ndarray  # (2, n_ao, n_mo): spin up, spin down
  energy: float  # hartree
  method: str  # 'RHF', 'UHF' or 'ROHF'
  nspins: tuple[int, int]
  basis: str

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


def basis_label(system: systems.System, basis: str, pp_basis: str = '') -> str:
  """The basis as logged and cached, e.g. 'ccpvdz' or 'ccpvdz, ccecp[Na] ccecp-cc-pVDZ'."""
  if not system.pseudopotential:
    return basis
  return f'{basis}, {system.hamiltonian} {pp_basis}'


def _molecule(system: systems.System, basis: str, pp_basis: str = ''):
  """The PySCF molecule: `basis` on all-electron atoms, `pp_basis` (and the ECP) on the
  atoms with a pseudopotential."""
  from pyscf import gto
  ecp_symbols = {a.symbol for a in system.atoms if a.ecp}
  basis_of = {a.symbol: pp_basis if a.symbol in ecp_symbols else basis for a in system.atoms}
  try:
    return gto.M(atom=[(a.symbol, a.coords) for a in system.atoms], unit='bohr',
                 basis=basis_of, ecp={s: system.pseudopotential for s in ecp_symbols},
                 charge=system.charge, spin=system.spin, verbose=0)
  except Exception as e:  # PySCF raises several types for a missing basis or element.
    what = f'pretrain.basis={basis!r}' + (
        f' with system.pp.basis={pp_basis!r}' if ecp_symbols else '')
    raise ConfigError(
        f'{what} cannot be built for {system.name} '
        f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}); choose a basis '
        "that covers every element (e.g. 'ccpvdz', 'sto-3g'; 'ccecp-cc-pVDZ' for ccECP "
        "atoms) or pretrain.method='none'") from None


def check_basis(system: systems.System, basis: str, pp_basis: str = '') -> None:
  """Raises ConfigError now if PySCF cannot build `basis` for the system."""
  _molecule(system, basis, pp_basis)


def hartree_fock(system: systems.System, basis: str, open_shell: str = 'uhf',
                 cache_dir: str | None = None, write_cache: bool = True,
                 pp_basis: str = '') -> HartreeFock:
  """RHF for closed shells, UHF/ROHF for open shells, loaded from `cache_dir` if there
  (and written there unless write_cache is False: see `write_cache`). Atoms with a
  pseudopotential get it and the basis `pp_basis`.

  In a multi-process run, process 0 solves (and caches) and the others receive its
  orbitals, so every process fits the same targets. Raises ConfigError if PySCF cannot
  build the basis or the SCF does not converge.
  """
  mol = _molecule(system, basis, pp_basis)
  most = max(int(n) for n in system.electrons)
  if most > mol.nao:
    raise ConfigError(
        f'pretrain.basis={basis!r} has {mol.nao} orbitals for {system.name}, too few for its '
        f'{most} electrons of one spin (electrons (up, down) = {tuple(system.electrons)}); '
        "choose a larger basis (e.g. 'ccpvdz'), check system.charge and system.spin, or set "
        "pretrain.method='none'")
  basis = basis_label(system, basis, pp_basis)
  method = 'RHF' if system.spin == 0 else open_shell.upper()
  if method not in ('RHF', 'UHF', 'ROHF'):
    raise ConfigError(f"pretrain.open_shell={open_shell!r} is not known; use 'uhf' or 'rohf'")
  mo_coeff, energy = parallel.on_main(
      lambda: _load(mol, basis, method, cache_dir) or _solve(mol, system.name, basis, method))
  nspins = (int(system.electrons[0]), int(system.electrons[1]))
  hf = HartreeFock(mol, mo_coeff, energy, method, nspins, basis)
  if cache_dir and write_cache and parallel.is_main():
    write_cache_file(hf, cache_dir)
  return hf


def _load(mol: Any, basis: str, method: str,
          cache_dir: str | None) -> tuple[np.ndarray, float] | None:
  """(mo_coeff, energy) from a cache of the same basis and method in cache_dir, if any."""
  cache = os.path.join(cache_dir, _CACHE) if cache_dir else None
  if not cache or not os.path.exists(cache):
    return None
  try:
    with np.load(cache) as data:
      if str(data['basis']) == basis and str(data['method']) == method and (
          data['mo_coeff'].shape[1] == mol.nao):
        mo_coeff, energy = np.asarray(data['mo_coeff']), float(data['energy'])
        logging.info('Hartree-Fock orbitals loaded from %s (%s/%s, E = %.6f Ha)', cache,
                     method, basis, energy)
        return mo_coeff, energy
  except runfolder.DAMAGED:
    runfolder.set_aside(cache, 'the SCF is solved again')
  return None


def _solve(mol: Any, name: str, basis: str, method: str) -> tuple[np.ndarray, float]:
  """(mo_coeff (2, n_ao, n_mo), energy) from PySCF."""
  from pyscf import scf
  solver = {'RHF': scf.RHF, 'UHF': scf.UHF, 'ROHF': scf.ROHF}[method]
  t0 = time.time()
  mf = solver(mol)
  energy = float(mf.kernel())
  if not mf.converged:
    mf = mf.newton()  # second-order SCF rescues most slow or oscillating cases
    energy = float(mf.kernel())
  if not mf.converged or not np.isfinite(energy):
    raise ConfigError(
        f'PySCF {method}/{basis} did not converge for {name}; try another '
        "pretrain.basis, pretrain.open_shell='rohf', or pretrain.method='none'")
  mo = np.asarray(mf.mo_coeff)
  mo_coeff = np.stack([mo, mo]) if mo.ndim == 2 else mo
  logging.info('Hartree-Fock %s/%s energy %.6f Ha (%.1f s)', method, basis, energy,
               time.time() - t0)
  return mo_coeff, energy


def cached_energy(directory: str) -> float | None:
  """The Hartree-Fock energy kept in directory/hf_orbitals.npz, if the run pretrained."""
  try:
    with np.load(os.path.join(directory, _CACHE)) as data:
      return float(data['energy'])
  except runfolder.DAMAGED:
    return None


def write_cache_file(hf: HartreeFock, directory: str) -> None:
  """Keeps the SCF solution in directory/hf_orbitals.npz (atomically) for later runs."""
  os.makedirs(directory, exist_ok=True)
  cache = os.path.join(directory, _CACHE)

  def write(tmp: str) -> None:
    with open(tmp, 'wb') as f:
      np.savez(f, mo_coeff=hf.mo_coeff, energy=hf.energy, basis=hf.basis, method=hf.method)
  writers.write_atomically(cache, write)


def make_hf_callback(hf: HartreeFock) -> Callable:
  """HF orbitals as a JAX function (a host callback) of x: (batch, 3N)."""
  def fn(x: Array) -> list[Array]:
    shapes = [jax.ShapeDtypeStruct((x.shape[0], n, n), jnp.float32) for n in hf.nspins]
    return jax.pure_callback(lambda y: hf.orbitals(y), shapes, x)
  return fn


def hf_logabs(blocks: list[Array]) -> Array:
  """log|det Phi_up det Phi_down| of the HF Slater determinant, per walker."""
  total: Any = 0.0
  for block in blocks:
    if block.shape[-1]:
      total = total + jnp.linalg.slogdet(block)[1]
  return total


def target_orbitals(hf_blocks: list[Array], full_det: bool,
                    nspins: tuple[int, int]) -> list[Array]:
  """The network-shaped targets: one block-diagonal (N, N) matrix, or the spin blocks."""
  hf_blocks = [b for b, n in zip(hf_blocks, nspins, strict=True) if n]
  if not full_det or len(hf_blocks) == 1:
    return hf_blocks
  up, down = hf_blocks
  batch, n_up, n_down = up.shape[0], up.shape[1], down.shape[1]
  top = jnp.concatenate([up, jnp.zeros((batch, n_up, n_down), up.dtype)], axis=-1)
  bottom = jnp.concatenate([jnp.zeros((batch, n_down, n_up), up.dtype), down], axis=-1)
  return [jnp.concatenate([top, bottom], axis=1)]


def make_pretrain_step(network: Network, hf: HartreeFock, opts: PretrainSpec,
                       sampling: SamplerSpec, system: systems.System,
                       full_det: bool) -> tuple[Callable, Callable]:
  """Returns (step, init): pmapped step(params, opt_state, walkers, key) -> (params,
  opt_state, walkers, loss, pmove, move width used) and init(params) -> opt_state.
  full_det: network.full_det (the shape of the orbital targets)."""
  nspins = hf.nspins
  w = opts.hf_sample_weight
  hf_fn = make_hf_callback(hf)
  tx = optax.adam(opts.lr)
  batch_logabs = jax.vmap(network.logabs, in_axes=(None, 0))

  def batch_net_orbitals(params: Params, x: Array) -> list[Array]:
    blocks = jax.vmap(network.orbitals, in_axes=(None, 0))(params, x)
    if full_det and len(blocks) == 2:
      blocks = [jnp.concatenate(blocks, axis=2)]  # (batch, det, N, N)
    return blocks

  def sample_logabs(params: Params, x: Array) -> Array:
    """log of the sampling amplitude: w |psi_HF| + (1 - w) |psi_net|."""
    log_hf = hf_logabs(hf_fn(x))
    if w >= 1.0:
      return log_hf
    log_net = batch_logabs(params, x)
    if w <= 0.0:
      return log_net
    return jnp.logaddexp(jnp.log(w) + log_hf, jnp.log1p(-w) + log_net)

  sampler = mcmc.make_sampler(sample_logabs, system, sampling)

  def loss_fn(params: Params, x: Array, targets: list[Array]) -> Array:
    blocks = batch_net_orbitals(params, x)
    losses = [jnp.mean((b - t[:, None]) ** 2) for b, t in zip(blocks, targets, strict=True)]
    return typing.cast(Array, sum(losses))

  def step(params: Params, opt_state: Any, walkers: MCMCState, key: PRNGKey):  # noqa: ANN202
    used_width = walkers.width
    walkers, pmove = sampler.adapt_step(params, walkers, key)
    targets = target_orbitals(hf_fn(walkers.x), full_det, nspins)
    loss, grads = jax.value_and_grad(loss_fn)(params, walkers.x, targets)
    updates, opt_state = tx.update(parallel.pmean(grads), opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, walkers, parallel.pmean(loss), pmove, used_width

  return parallel.pmap(step, donate_argnums=(0, 1, 2)), parallel.pmap(tx.init)


class _FiniteLoss(loop.Hook):
  def after(self, t: int, state: Any, row: dict) -> None:
    if not np.isfinite(row['loss']):
      raise RunAborted(f'pretraining loss is {row["loss"]} at iteration {t}: lower '
                       "pretrain.lr, or set pretrain.method='none'")


def run(state: TrainState, network: Network, hf: HartreeFock, spec: Spec, save_path: str,
        signals: loop.Signals) -> TrainState | None:
  """Pretrains `state.params` and moves the walkers; writes pretrain_stats.csv afresh.

  Returns the new state, or None when a signal stopped it before its last iteration (the
  pretraining is then lost: a rerun starts it again). A non-finite loss raises RunAborted.
  """
  n = spec.pretrain.iterations
  pretrain_step, init = make_pretrain_step(network, hf, spec.pretrain, spec.mcmc,
                                           spec.system, spec.network.full_det)
  path = os.path.join(save_path, 'pretrain_stats.csv')
  parallel.on_main(lambda: writers.truncate_csv(path, 0))  # an earlier attempt's rows
  t_start = time.time()

  def step(carry: tuple, t: int) -> tuple[tuple, dict]:
    params, opt_state, walkers, key = carry
    key, sub = _split(key)
    params, opt_state, walkers, loss, pmove, used = pretrain_step(params, opt_state, walkers,
                                                                  sub)
    loss, pmove, used = (float(v) for v in parallel.first((loss, pmove, used)))
    return (params, opt_state, walkers, key), dict(
        step=t, loss=loss, pmove=pmove, move_width=used, wall_time=time.time() - t_start)

  with writers.CsvWriter(path, PRETRAIN_COLUMNS, enabled=parallel.is_main()) as out:
    hooks = [loop.StatsFile(out, path),
             loop.Progress(n, spec.log.print_every_seconds, label='pretrain', text=lambda r: (
                 f'loss={r["loss"]:.3e}  pmove={r["pmove"]:.2f}  width={r["move_width"]:.3f}')),
             _FiniteLoss()]
    carry = (state.params, init(state.params), state.mcmc, state.key)
    (params, _, walkers, key), _, stopped = loop.iterate(step, carry, 0, n, hooks, signals)
  return None if stopped else state._replace(params=params, mcmc=walkers, key=key)


_split = parallel.pmap(lambda k: tuple(jax.random.split(k)))
