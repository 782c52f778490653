"""Pretraining: fit the network's orbitals to Hartree-Fock orbitals from PySCF.

For every determinant d and walker, the network's orbital matrix Phi^d[i, k] is fitted in
least squares to the HF matrix (phi_k(r_i) for the occupied orbitals of each spin). With
dense determinants the target is block diagonal, [[Phi_up, 0], [0, Phi_down]], so that each
dense determinant starts as the HF Slater determinant. Walkers meanwhile follow Metropolis
moves on |psi_HF|^2 (or a mixture with the network, `pretrain.hf_sample_weight`), so that
training starts from equilibrated walkers.

K excited states (system.states) fit state s's determinants to the Slater determinant of
`excitations(hf, K)[s]`: the HF determinant, then the K - 1 single excitations of lowest
orbital-energy gap that keep each electron's spin (so within the run's (n_up, n_down)
sector; a singlet-triplet pair of a closed shell starts as its two spin-flipped
determinants, which the training mixes). Walkers of K copies sample |det[psi_HF,s(x^j)]|^2.
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

from vmc import loop, mcmc, parallel, runfolder, states, systems, writers
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
  mo_energy: np.ndarray  # (2, n_mo) orbital energies, hartree
  energy: float  # hartree
  method: str  # 'RHF', 'UHF' or 'ROHF'
  nspins: tuple[int, int]
  basis: str

  def orbitals(self, x: np.ndarray, occupied: tuple[tuple[int, ...], tuple[int, ...]]
               | None = None) -> list[np.ndarray]:
    """Occupied orbitals at the electrons of each spin.

    x: (batch, n_electrons * 3) in bohr. Returns [(batch, n_up, n_up), (batch, n_down,
    n_down)], entry [b, i, k] = phi_k(r_i) for the i-th electron of that spin, the
    orbitals k those of `occupied` (up, down) (default: the lowest n_up, n_down).
    """
    x = np.asarray(x, np.float64)
    batch = x.shape[0]
    pos = x.reshape(batch, -1, 3)
    out = []
    start = 0
    for spin, n_s in enumerate(self.nspins):
      coords = pos[:, start:start + n_s].reshape(-1, 3)
      ao = self.mol.eval_gto('GTOval_sph', coords) if n_s else np.zeros((0, 1))
      cols = list(occupied[spin]) if occupied is not None else list(range(n_s))
      mo = ao @ self.mo_coeff[spin][:, cols] if n_s else np.zeros((0, 0))
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
  mo_coeff, mo_energy, energy = parallel.on_main(
      lambda: _load(mol, basis, method, cache_dir) or _solve(mol, system.name, basis, method))
  nspins = (int(system.electrons[0]), int(system.electrons[1]))
  hf = HartreeFock(mol, mo_coeff, mo_energy, energy, method, nspins, basis)
  if cache_dir and write_cache and parallel.is_main():
    write_cache_file(hf, cache_dir)
  return hf


def _load(mol: Any, basis: str, method: str,
          cache_dir: str | None) -> tuple[np.ndarray, np.ndarray, float] | None:
  """(mo_coeff, mo_energy, energy) from a cache of the same basis and method in cache_dir,
  if any (a cache written before orbital energies were kept is solved again)."""
  cache = os.path.join(cache_dir, _CACHE) if cache_dir else None
  if not cache or not os.path.exists(cache):
    return None
  try:
    with np.load(cache) as data:
      if str(data['basis']) == basis and str(data['method']) == method and (
          data['mo_coeff'].shape[1] == mol.nao) and 'mo_energy' in data:
        mo_coeff, energy = np.asarray(data['mo_coeff']), float(data['energy'])
        logging.info('Hartree-Fock orbitals loaded from %s (%s/%s, E = %.6f Ha)', cache,
                     method, basis, energy)
        return mo_coeff, np.asarray(data['mo_energy']), energy
  except runfolder.DAMAGED:
    runfolder.set_aside(cache, 'the SCF is solved again')
  return None


def _solve(mol: Any, name: str, basis: str,
           method: str) -> tuple[np.ndarray, np.ndarray, float]:
  """(mo_coeff (2, n_ao, n_mo), mo_energy (2, n_mo), energy) from PySCF."""
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
  e = np.asarray(mf.mo_energy)
  mo_energy = np.stack([e, e]) if e.ndim == 1 else e
  logging.info('Hartree-Fock %s/%s energy %.6f Ha (%.1f s)', method, basis, energy,
               time.time() - t0)
  return mo_coeff, mo_energy, energy


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
      np.savez(f, mo_coeff=hf.mo_coeff, mo_energy=hf.mo_energy, energy=hf.energy,
               basis=hf.basis, method=hf.method)
  writers.write_atomically(cache, write)


Occupation = tuple[tuple[int, ...], tuple[int, ...]]  # occupied orbitals (up, down)


def excitations(hf: HartreeFock, k: int) -> list[Occupation]:
  """The occupations of K determinants: the HF ground state, then the K - 1 spin-conserving
  single excitations i -> a of lowest gap eps_a - eps_i (ties: spin up first, then by i, a).
  Raises ConfigError when the basis has fewer than K - 1 of them."""
  n_mo = hf.mo_energy.shape[-1]
  ground = tuple(tuple(range(n_s)) for n_s in hf.nspins)
  singles = []
  for spin, n_s in enumerate(hf.nspins):
    for i in range(n_s):
      for a in range(n_s, n_mo):
        gap = round(float(hf.mo_energy[spin][a] - hf.mo_energy[spin][i]), 6)
        singles.append((gap, spin, i, a))
  if len(singles) < k - 1:
    raise ConfigError(
        f'system.states={k} needs {k - 1} single excitations to pretrain from, but '
        f'pretrain.basis={hf.basis!r} has only {len(singles)} for {hf.mol.nelectron} electrons '
        "in its ' f'{n_mo} orbitals; use a larger basis (e.g. 'aug-cc-pvdz') or fewer states")
  out: list[Occupation] = [(ground[0], ground[1])]
  for _, spin, i, a in sorted(singles)[:k - 1]:
    occ = [list(ground[0]), list(ground[1])]
    occ[spin][i] = a
    out.append((tuple(occ[0]), tuple(occ[1])))
  return out


def make_hf_callback(hf: HartreeFock) -> Callable:
  """HF orbitals as a JAX function (a host callback) of x: (batch, 3N)."""
  def fn(x: Array) -> list[Array]:
    shapes = [jax.ShapeDtypeStruct((x.shape[0], n, n), jnp.float32) for n in hf.nspins]
    return jax.pure_callback(lambda y: hf.orbitals(y), shapes, x)
  return fn


def make_states_callback(hf: HartreeFock, occupations: list[Occupation]) -> Callable:
  """The orbitals of K determinants as a JAX function of x (batch, 3N): per spin
  (batch, K, n_s, n_s), state s's occupied orbitals at the electrons."""
  k = len(occupations)

  def host(y: np.ndarray) -> list[np.ndarray]:
    per_state = [hf.orbitals(y, occ) for occ in occupations]
    return [np.stack([p[spin] for p in per_state], axis=1) for spin in range(2)]

  def fn(x: Array) -> list[Array]:
    shapes = [jax.ShapeDtypeStruct((x.shape[0], k, n, n), jnp.float32) for n in hf.nspins]
    return jax.pure_callback(host, shapes, x)
  return fn


def hf_slogdet(blocks: list[Array]) -> tuple[Array, Array]:
  """(sign, log|det Phi_up det Phi_down|) over the leading axes of the spin blocks."""
  sign: Any = 1.0
  total: Any = 0.0
  for block in blocks:
    if block.shape[-1]:
      s, ld = jnp.linalg.slogdet(block)
      sign, total = sign * s, total + ld
  return sign, total


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
  lead, n_up, n_down = up.shape[:-2], up.shape[-1], down.shape[-1]
  top = jnp.concatenate([up, jnp.zeros(lead + (n_up, n_down), up.dtype)], axis=-1)
  bottom = jnp.concatenate([jnp.zeros(lead + (n_down, n_up), up.dtype), down], axis=-1)
  return [jnp.concatenate([top, bottom], axis=-2)]


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
  k = network.states.k if network.states else 0
  if k:  # K states: walkers of K copies, targets the K determinants of `excitations`
    states_fn = make_states_callback(hf, excitations(hf, k))

    def hf_states_logabs(x: Array) -> Array:
      """log|det[psi_HF,s(x^j)]| of walkers x (batch, K * 3N)."""
      sign, logdet = hf_slogdet(states_fn(x.reshape(x.shape[0] * k, -1)))
      return jax.vmap(states.log_det)(sign.reshape(-1, k, k), logdet.reshape(-1, k, k))[1]

    def states_targets(x: Array) -> list[Array]:
      """(batch K, K, ...) targets at every copy for every state."""
      return target_orbitals(states_fn(x.reshape(x.shape[0] * k, -1)), full_det, nspins)

  def batch_net_orbitals(params: Params, x: Array) -> list[Array]:
    blocks = jax.vmap(network.orbitals, in_axes=(None, 0))(params, x)
    if full_det and len(blocks) == 2:
      blocks = [jnp.concatenate(blocks, axis=2)]  # (batch, det, N, N)
    return blocks

  def sample_logabs(params: Params, x: Array) -> Array:
    """log of the sampling amplitude: w |psi_HF| + (1 - w) |psi_net|."""
    log_hf = hf_states_logabs(x) if k else hf_logabs(hf_fn(x))
    if w >= 1.0:
      return log_hf
    log_net = batch_logabs(params, x)
    if w <= 0.0:
      return log_net
    return jnp.logaddexp(jnp.log(w) + log_hf, jnp.log1p(-w) + log_net)

  sampler = mcmc.make_sampler(sample_logabs, system, sampling, max(k, 1))

  def loss_fn(params: Params, x: Array, targets: list[Array]) -> Array:
    if k:  # every copy's orbitals (batch K, K D, ...) as (batch K, K, D, ...)
      blocks = [b.reshape(b.shape[0], k, -1, *b.shape[2:])
                for b in batch_net_orbitals(params, x.reshape(x.shape[0] * k, -1))]
      losses = [jnp.mean((b - t[:, :, None]) ** 2) for b, t in zip(blocks, targets, strict=True)]
    else:
      blocks = batch_net_orbitals(params, x)
      losses = [jnp.mean((b - t[:, None]) ** 2) for b, t in zip(blocks, targets, strict=True)]
    return typing.cast(Array, sum(losses))

  def step(params: Params, opt_state: Any, walkers: MCMCState, key: PRNGKey):  # noqa: ANN202
    used_width = walkers.width
    walkers, pmove = sampler.adapt_step(params, walkers, key)
    targets = (states_targets(walkers.x) if k
               else target_orbitals(hf_fn(walkers.x), full_det, nspins))
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
