"""Expectation values beyond the energy, estimated on the walkers of every iteration.

All in atomic units. Selected by `observables.*`; meant for evaluation runs
(`optim.optimizer=none`) of a converged wavefunction, where every iteration samples the
same |psi|^2.

- dipole: d = sum_A Z_A R_A - sum_i r_i (e bohr; 1 a.u. = 2.541746 debye), pointing from
  the negative to the positive charge.
- s2: <S^2> of the spin-assigned wavefunction (first n_up electrons up):
  <S^2> = S_z (S_z + 1) + n_down - sum_{i up, j down} <psi(r with r_i, r_j swapped) / psi(r)>
  (a swap of an up and a down electron's positions; exact for any psi, 0.75 for a pure
  doublet).
- density 'radial': electrons of each spin per bohr at distance r from the centre of
  nuclear charge (a histogram; integrates to n_up and n_down); 'grid': electrons of each
  spin per bohr^3 on a cube of side 2 * density_extent centred there.
- forces: forces on the nuclei, hartree/bohr, by the estimators of vmc.forces
  ('forces_hf', 'forces_zv', 'forces_zvzb', each (n_atoms, 3) per iteration), with
  reblocked means and errors in observables.h5 and summary.json. They cost about one more
  local-energy evaluation and one gradient per walker and iteration.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NamedTuple
from collections.abc import Callable

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from vmc import forces, loop, parallel, runfolder, states, statistics, systems, writers
from vmc.spec import ObservablesSpec
from vmc.types import Array, Params

if TYPE_CHECKING:
  from vmc.networks import Network

DEBYE_PER_AU = 2.541746


class Observables(NamedTuple):
  columns: tuple[str, ...]  # per-iteration scalars, added to the statistics CSV
  arrays: tuple[str, ...]  # per-iteration arrays, kept in observables.h5
  evaluate: Callable  # pmapped (params, x) -> {name: device-averaged value}
  attrs: dict  # grid/bin descriptions for the HDF5 file


def stats_columns(obs: Observables | None, states: int = 0) -> tuple[str, ...]:
  """The columns of a run's statistics file: the training columns, those of K excited
  states, then the observables'."""
  return writers.TRAIN_COLUMNS + writers.state_columns(states) + (obs.columns if obs else ())


def make(network: Network, local_energy: Callable[[Params, Array], Array],
         system: systems.System, o: ObservablesSpec) -> Observables:
  """The observables selected by `o` of the network; local_energy(params, x (batch, 3N))
  -> (batch,) unclipped local energies (for the forces)."""
  wavefunction = network.apply
  charges = np.array([a.charge for a in system.atoms], np.float32)
  coords = np.array([a.coords for a in system.atoms], np.float32)
  centre = (charges[:, None] * coords).sum(0) / charges.sum()
  n_up, n_down = system.electrons
  n = n_up + n_down
  columns, arrays, attrs = [], [], {}
  k = network.states.k if network.states else 0
  if o.dipole and k:  # matrices M^-1 diag(d) M of the K states (vmc.states)
    columns += list(dipole_matrix_columns(k))
  elif o.dipole:
    columns += ['dipole_x', 'dipole_y', 'dipole_z']
  if o.s2 and k:  # M^-1 (S^2 M)
    columns += [f's2_{i}_{j}' for i in range(k) for j in range(k)]
  elif o.s2:
    columns += ['s2']
  if o.density == 'radial':
    edges = np.linspace(0.0, o.density_extent, o.density_bins + 1, dtype=np.float32)
    arrays.append('radial_density')
    attrs['radial_edges'] = edges
  elif o.density == 'grid':
    axis = np.linspace(-o.density_extent, o.density_extent, o.density_bins + 1,
                       dtype=np.float32)
    arrays.append('grid_density')
    attrs['grid_edges'] = axis
    attrs['grid_centre'] = centre
  if o.forces:
    arrays += [f'forces_{k}' for k in forces.ESTIMATORS]
    attrs['atoms'] = np.array([a.symbol for a in system.atoms], dtype='S2')
    attrs['positions'] = coords
    force_estimate = forces.make(network.apply, local_energy, system.positions,
                                 system.charges)
  pairs = [(i, j) for i in range(n_up) for j in range(n_up, n)]

  def per_walker(params: Params, x: Array) -> dict[str, Array]:
    """Observables of one walker x (3n,) -> dict of arrays."""
    out = {}
    if k:  # the config allows the dipole and S^2 with excited states
      return state_matrices(network, o, (int(n_up), int(n_down)), params, x)
    r = x.reshape(n, 3)
    if o.dipole:
      out['dipole'] = (charges[:, None] * coords).sum(0) - r.sum(0)
    if o.s2:
      sign, logabs = wavefunction(params, x)
      total: Any = 0.0
      for i, j in pairs:
        swapped = r.at[i].set(r[j]).at[j].set(r[i]).reshape(-1)
        s_sw, l_sw = wavefunction(params, swapped)
        total = total + s_sw * sign * jnp.exp(l_sw - logabs)
      sz = 0.5 * (n_up - n_down)
      out['s2'] = sz * (sz + 1) + n_down - total
    if o.density == 'radial':
      dist = jnp.linalg.norm(r - centre, axis=-1)
      width = edges[1] - edges[0]
      hist = [jnp.histogram(dist[sl], bins=edges)[0] / width
              for sl in (slice(0, n_up), slice(n_up, n))]
      out['radial_density'] = jnp.stack(hist).astype(jnp.float32)
    elif o.density == 'grid':
      rel = r - centre
      volume = (axis[1] - axis[0]) ** 3
      hist = [jnp.histogramdd(rel[sl], bins=(axis, axis, axis))[0] / volume
              for sl in (slice(0, n_up), slice(n_up, n))]
      out['grid_density'] = jnp.stack(hist).astype(jnp.float32)
    return out

  def evaluate(params: Params, x: Array) -> dict[str, Array]:
    values = jax.vmap(per_walker, in_axes=(None, 0))(params, x)
    out = {k: parallel.pmean(jnp.mean(v, axis=0)) for k, v in values.items()}
    if o.forces:
      out.update(force_estimate(params, x))
    return out

  return Observables(tuple(columns), tuple(arrays), parallel.pmap(evaluate), attrs)


def state_matrices(network: Network, o: ObservablesSpec, nspins: tuple[int, int],
                   params: Params, x: Array) -> dict[str, Array]:
  """The dipole and S^2 matrices (vmc.states) of K excited states at one walker of K
  copies, as `o` asks."""
  assert network.states is not None
  state_apply, k = network.states.evaluate, network.states.k
  out = {}
  if o.dipole:
    sign, logabs = states.state_matrix(state_apply, params, x, k)
    out['dipole_matrices'] = states.dipole_matrices(sign, logabs, x)
  if o.s2:
    out['spin_matrices'] = states.spin_matrix(state_apply, params, x, k, nspins)
  return out


def dipole_matrix_columns(k: int) -> tuple[str, ...]:
  """d{c}_{i}_{j}: the mean dipole matrices of K excited states, c in x, y, z."""
  return tuple(f'd{c}_{i}_{j}' for c in 'xyz' for i in range(k) for j in range(k))


def dipole_matrices(stats: dict, k: int) -> np.ndarray | None:
  """(T, 3, K, K) from a statistics table's d{c}_{i}_{j} columns, or None."""
  if 'dx_0_0' not in stats:
    return None
  return np.stack([np.stack([np.stack([np.asarray(stats[f'd{c}_{i}_{j}']) for j in range(k)],
                                      -1) for i in range(k)], -2) for c in 'xyz'], 1)


def row_values(values: dict) -> dict[str, float]:
  """The CSV columns of one iteration's (host) values."""
  row: dict[str, float] = {}
  if 'spin_matrices' in values:
    s = np.asarray(values['spin_matrices'])
    row.update({f's2_{i}_{j}': float(s[i, j]) for i in range(s.shape[0])
                for j in range(s.shape[1])})
  if 'dipole_matrices' in values:
    d = np.asarray(values['dipole_matrices'])
    k = d.shape[-1]
    row.update({f'd{c}_{i}_{j}': float(d[n, i, j]) for n, c in enumerate('xyz')
                for i in range(k) for j in range(k)})
  if 'dipole' in values:
    row.update(zip(('dipole_x', 'dipole_y', 'dipole_z'), (float(v) for v in values['dipole']),
                   strict=True))
  if 's2' in values:
    row['s2'] = float(values['s2'])
  return row


def spin_matrices(stats: dict, k: int) -> np.ndarray | None:
  """(T, K, K) from a statistics table's s2_{i}_{j} columns, or None."""
  if 's2_0_0' not in stats:
    return None
  return np.stack([np.stack([np.asarray(stats[f's2_{i}_{j}']) for j in range(k)], -1)
                   for i in range(k)], -2)


class Measure(loop.Hook):
  """After each iteration: the observables of its walkers, into the row (CSV columns) and
  the array store (observables.h5)."""

  def __init__(self, obs: Observables, store: ArrayStore) -> None:
    self.obs, self.store = obs, store

  def after(self, t: int, state: Any, row: dict) -> None:
    values = parallel.first(self.obs.evaluate(state.params, state.mcmc.x))
    row.update(row_values(values))
    self.store.append(t, values)


class ArrayStore:
  """Per-iteration observable arrays in `observables.h5`, kept in step with checkpoints.

  On resume, rows past the checkpoint's step are dropped (as in the CSV); `save` rewrites
  the file atomically (temporary file, rename), so it is always whole.
  """

  def __init__(self, path: str, names: tuple[str, ...], attrs: dict, first_step: int,
               enabled: bool = True):
    self.path, self.names, self.attrs, self.enabled = path, names, attrs, enabled
    self.steps: list[int] = []
    self.data: dict[str, list[np.ndarray]] = {k: [] for k in names}
    if enabled and names and os.path.exists(path):
      try:
        with h5py.File(path, 'r') as f:
          keep = np.asarray(f['step'][:]) < first_step
          steps = [int(s) for s in np.asarray(f['step'][:])[keep]]
          data = {k: list(np.asarray(f[k][:])[keep]) for k in names if k in f}
      except runfolder.DAMAGED:
        runfolder.set_aside(path, f'the observables of the steps before {first_step} are '
                            'lost; the summary covers the steps from there on')
      else:
        self.steps = steps
        self.data.update(data)

  def append(self, step: int, values: dict) -> None:
    if not self.names:
      return
    self.steps.append(step)
    for k in self.names:
      self.data[k].append(np.asarray(values[k]))

  def save(self) -> None:
    if not (self.enabled and self.names):
      return

    def write(tmp: str) -> None:
      with h5py.File(tmp, 'w') as f:
        f.create_dataset('step', data=np.asarray(self.steps, np.int64))
        for k in self.names:
          if self.data[k]:
            f.create_dataset(k, data=np.stack(self.data[k]), compression='gzip')
            f.create_dataset(k + '_mean', data=np.mean(np.stack(self.data[k]), axis=0))
            if k.startswith('forces_'):
              f.create_dataset(k + '_error', data=reblocked(np.stack(self.data[k]))[1])
        for k, v in self.attrs.items():
          f.create_dataset(k, data=v)
        f.attrs['units'] = ('atomic units: bohr, electrons per bohr (radial) or bohr^3 '
                            '(grid), hartree/bohr (forces)')
    writers.write_atomically(self.path, write)


def reblocked(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, reblocked error) of each element of a (iterations, ...) series."""
  flat = np.asarray(series, np.float64).reshape(len(series), -1)
  est = [statistics.estimate(flat[:, j]) for j in range(flat.shape[1])]
  shape = np.shape(series)[1:]
  return (np.array([e.mean for e in est]).reshape(shape),
          np.array([e.error for e in est]).reshape(shape))


def summarize_forces(run_dir: str, first_step: int) -> dict:
  """Reblocked forces (hartree/bohr) over the iterations from `first_step` on, from a
  run's observables.h5; {} without forces."""
  path = os.path.join(run_dir, 'observables.h5')
  if not os.path.exists(path):
    return {}
  out: dict[str, Any] = {}
  with h5py.File(path, 'r') as f:
    if 'forces_zvzb' not in f:
      return {}
    keep = np.asarray(f['step'][:]) >= first_step
    out['forces_units'] = forces.UNITS
    out['forces_atoms'] = [s.decode() for s in np.asarray(f['atoms'][:])]
    out['forces_iterations'] = int(keep.sum())
    for k in forces.ESTIMATORS:
      mean, error = reblocked(np.asarray(f[f'forces_{k}'][:])[keep])
      out[f'forces_{k}'], out[f'forces_{k}_error'] = mean.tolist(), error.tolist()
  return out


def summarize(stats: dict[str, np.ndarray]) -> dict:
  """Reblocked estimates of the scalar observables in a statistics table."""
  out: dict[str, Any] = {}
  if 'dipole_x' in stats:
    comps = [statistics.estimate(stats[f'dipole_{c}']) for c in 'xyz']
    out['dipole_au'] = [e.mean for e in comps]
    out['dipole_error_au'] = [e.error for e in comps]
    norm = float(np.linalg.norm(out['dipole_au']))
    out['dipole_norm_debye'] = norm * DEBYE_PER_AU
  if 's2' in stats:
    e = statistics.estimate(stats['s2'])
    out['s2'], out['s2_error'] = e.mean, e.error
  return out
