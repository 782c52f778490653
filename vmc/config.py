"""Configuration: every default lives here, once.

Key names follow FermiNet's where the concept is the same, so configs carry over.
`default()` holds production-sized defaults; `get_config()` (the job `vmc` runs with no
flags) is a small helium run that converges in a few minutes on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import json

import ml_collections
from ml_collections.config_dict import placeholder

from vmc import hamiltonian, networks, systems
from vmc.networks import envelopes, jastrows
from vmc.errors import ConfigError

OPTIMIZERS = ('kfac', 'adam', 'none')


def default() -> ml_collections.ConfigDict:
  """Production defaults (FermiNet's where they exist)."""
  cfg = ml_collections.ConfigDict({
      'batch_size': 4096,  # walkers, summed over all devices
      'system': {
          'atom': '',  # element symbol, e.g. 'Li'
          # A name (vmc.systems.MOLECULES) or [(symbol, (x, y, z)), ...]; typed `object` so
          # that --config.system.molecule=LiH works on top of any config file.
          'molecule': placeholder(object),
          'units': 'bohr',  # of system.molecule coordinates: 'bohr' or 'angstrom'
          'charge': 0,
          'spin': placeholder(int),  # 2S; None: Hund's rule for atoms, lowest for molecules
          'electrons': placeholder(tuple),  # (n_up, n_down); overrides charge and spin
      },
      'network': {
          'network_type': 'ferminet',  # 'ferminet' or 'psiformer'
          'determinants': 16,
          'full_det': True,  # dense N x N determinants; False: spin-block determinants
          # 'isotropic': exp(-sigma |r - R|); 'diagonal': exp(-|sigma * (r - R)|), sigma a
          # 3-vector per nucleus and orbital.
          'envelope_type': 'isotropic',
          'envelope_shared': False,  # True: one envelope per orbital for all determinants
          'bias_orbitals': False,
          # 'simple_ee' (electron-electron cusp), 'none', or 'default': simple_ee for the
          # Psiformer, none for FermiNet.
          'jastrow': 'default',
          'ferminet': {
              # (one-electron width, two-electron width) per layer.
              'hidden_dims': ((256, 32), (256, 32), (256, 32), (256, 32)),
          },
          'psiformer': {  # as published (von Glehn et al. 2023)
              'num_layers': 4,
              'num_heads': 4,
              'heads_dim': 64,  # attention width = num_heads * heads_dim
              'mlp_hidden_dims': (256,),
              'use_layer_norm': True,
              'rescale_inputs': True,  # electron-nucleus distances as log(1 + r)
          },
      },
      'optim': {
          'optimizer': 'kfac',  # 'kfac', 'adam' or 'none' (sampling only)
          'iterations': 100000,
          # Exact Laplacian: 'forward' (one forward pass: FermiNet's own, using its
          # sparsity; for the Psiformer the same as 'folx'), 'loop' (jvp of the gradient
          # over 3N coordinates), 'folx' (folx's generic forward Laplacian).
          'laplacian': 'forward',
          # Walkers per device whose local energies are computed together (0: all). Lower
          # it when the local energy runs out of memory; the result does not change.
          'local_energy_chunk_size': 0,
          'clip_local_energy': 5.0,  # clip at median +- this many mean absolute deviations
          'lr': {
              'rate': 0.05,  # rate / (1 + t / delay) ** decay
              'decay': 1.0,
              'delay': 10000.0,
          },
          'kfac': {
              'invert_every': 1,
              'cov_update_every': 1,
              'damping': 0.001,
              'cov_ema_decay': 0.95,
              'momentum': 0.0,
              'norm_constraint': 0.001,
              'min_damping': 1.0e-4,
              'l2_reg': 0.0,
              'register_only_generic': False,
          },
          'adam': {
              'b1': 0.9,
              'b2': 0.999,
              'eps': 1.0e-8,
          },
      },
      'pretrain': {
          'method': 'hf',  # 'hf': fit orbitals to Hartree-Fock (PySCF); 'none'
          'iterations': 1000,
          'basis': 'ccpvdz',
          'open_shell': 'uhf',  # SCF for open shells: 'uhf' or 'rohf' (closed: RHF)
          'lr': 1.0e-2,  # Adam; FermiNet's 3e-4 fits far too slowly (docs/pretraining.md)
          # Walkers sample (w |psi_HF| + (1 - w) |psi_net|)^2 during pretraining.
          'hf_sample_weight': 1.0,
      },
      'mcmc': {
          'steps': 10,  # Metropolis moves per iteration
          'burn_in': 100,  # iterations of `steps` moves before training
          'init_width': 1.0,  # bohr; spread of initial electrons around their nuclei
          'move_width': 0.02,  # bohr; initial Gaussian move width, then adapted
          'adapt_frequency': 100,  # iterations between move-width adaptations
          'target_acceptance': (0.5, 0.55),  # adapt the width to keep acceptance here
      },
      'log': {
          'save_path': '',  # default: checkpoints/<system>_<UTC timestamp>
          'restore_path': '',
          'save_frequency': 10.0,  # minutes between checkpoints
          'keep': 3,  # newest checkpoints kept
          'print_every_seconds': 5.0,
          'stats_ewm_alpha': 0.1,  # weight of the newest step in ewmean/ewvar
      },
      'observables': {  # per iteration, for evaluation runs (optim.optimizer='none')
          'dipole': False,  # electric dipole moment (a.u.): CSV columns dipole_x/y/z
          's2': False,  # <S^2>: CSV column s2
          'density': 'none',  # 'radial' or 'grid' spin densities, in observables.h5
          'density_bins': 100,  # radial bins, or grid points per axis
          'density_extent': 8.0,  # bohr: radius of the profile, half side of the grid cube
      },
      'distributed': {
          # 'auto': start jax.distributed when coordinator_address is set or when srun
          # (SLURM) or mpirun (Open MPI) launched several processes; 'on': always (JAX
          # detects the cluster); 'off': never.
          'mode': 'auto',
          'coordinator_address': '',  # HOST:PORT of process 0; '' = from the launcher
          'num_processes': placeholder(int),  # None = from the launcher
          'process_id': placeholder(int),  # None = from the launcher
          'timeout_seconds': 300,  # to wait at start-up for all processes
      },
      'debug': {
          'deterministic': False,  # fixed seed (debug.seed, or 23 if unset)
          'seed': placeholder(int),  # explicit seed; else drawn at random and logged
          # Consecutive non-finite steps (each rolled back) before the run stops.
          'max_bad_steps': 10,
      },
  })
  return cfg


def get_config() -> ml_collections.ConfigDict:
  """The default job of `vmc` with no flags: helium, small network, a few minutes."""
  cfg = default()
  cfg.system.atom = 'He'
  cfg.batch_size = 256
  cfg.network.determinants = 4
  cfg.network.ferminet.hidden_dims = ((32, 8), (32, 8))
  cfg.optim.iterations = 1000
  cfg.optim.lr.delay = 1000.0
  cfg.pretrain.iterations = 100
  return cfg


def _tuples(value):
  """JSON lists back to the tuples the config holds."""
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def from_json(text: str) -> ml_collections.ConfigDict:
  """The config of a run from its config.json (or a checkpoint's header): the defaults of
  this vmc version, updated with every key the JSON holds."""
  cfg = default()

  def update(node, values, prefix):
    for key, value in values.items():
      if key not in node:
        raise ValueError(f'config key {prefix}{key} is unknown to this vmc version')
      if isinstance(value, dict) and value and hasattr(node[key], 'keys'):
        update(node[key], value, f'{prefix}{key}.')
      else:
        node[key] = _tuples(value)

  update(cfg, json.loads(text), '')
  return cfg


@dataclasses.dataclass(frozen=True)
class Spec:
  """A checked, resolved run description (config in, nothing read from it later)."""
  system: systems.System
  cfg: ml_collections.ConfigDict


def _positive_int(value, key):
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f'{key}={value!r} must be a positive integer')
  return value


def _one_of(value, allowed, key):
  if value not in allowed:
    raise ConfigError(f'{key}={value!r} is not known; use one of {", ".join(allowed)}')


def _check_network(net: ml_collections.ConfigDict) -> None:
  _one_of(net.network_type, networks.TYPES, 'network.network_type')
  _one_of(net.envelope_type, envelopes.TYPES, 'network.envelope_type')
  _one_of(net.jastrow, ('default',) + jastrows.TYPES, 'network.jastrow')
  p = net.psiformer
  for key in ('num_layers', 'num_heads', 'heads_dim'):
    _positive_int(p[key], f'network.psiformer.{key}')
  try:
    ok = all(int(w) == w and w > 0 for w in p.mlp_hidden_dims)
  except TypeError:
    ok = False
  if not ok:
    raise ConfigError(f'network.psiformer.mlp_hidden_dims={p.mlp_hidden_dims!r} must be a list '
                      'of positive widths, e.g. (256,)')


def resolve(cfg: ml_collections.ConfigDict) -> Spec:
  """Validates the config and resolves the system; raises ConfigError with the fix."""
  s = cfg.system
  system = systems.make_system(
      atom=s.atom or None, molecule=s.molecule, charge=s.charge, spin=s.spin,
      electrons=s.electrons, units=s.units)
  _positive_int(cfg.batch_size, 'batch_size')
  _positive_int(cfg.optim.iterations, 'optim.iterations')
  _positive_int(cfg.mcmc.steps, 'mcmc.steps')
  _positive_int(cfg.network.determinants, 'network.determinants')
  _positive_int(cfg.log.keep, 'log.keep')
  _positive_int(cfg.debug.max_bad_steps, 'debug.max_bad_steps')
  if cfg.mcmc.burn_in < 0:
    raise ConfigError(f'mcmc.burn_in={cfg.mcmc.burn_in} must be >= 0')
  if cfg.optim.optimizer not in OPTIMIZERS:
    raise ConfigError(f'optim.optimizer={cfg.optim.optimizer!r} is not known; use one of '
                      f'{", ".join(OPTIMIZERS)}')
  _check_network(cfg.network)
  if cfg.optim.laplacian not in hamiltonian.METHODS:
    raise ConfigError(f'optim.laplacian={cfg.optim.laplacian!r} is not known; use one of '
                      f'{", ".join(hamiltonian.METHODS)}')
  chunk = cfg.optim.local_energy_chunk_size
  if not isinstance(chunk, int) or chunk < 0:
    raise ConfigError(f'optim.local_energy_chunk_size={chunk!r} must be an integer >= 0 '
                      '(walkers per local-energy chunk on each device; 0: all at once)')
  dims = cfg.network.ferminet.hidden_dims
  try:
    ok = len(dims) > 0 and all(len(d) == 2 and min(d) > 0 for d in dims)
  except TypeError:
    ok = False
  if not ok:
    raise ConfigError(f'network.ferminet.hidden_dims={dims!r} must be a non-empty list of '
                      '(one-electron width, two-electron width), e.g. ((64, 16), (64, 16))')
  if cfg.optim.clip_local_energy <= 0:
    raise ConfigError('optim.clip_local_energy must be > 0 (mean absolute deviations)')
  if cfg.pretrain.method not in ('hf', 'none'):
    raise ConfigError(f"pretrain.method={cfg.pretrain.method!r} is not known; use 'hf' or "
                      "'none'")
  if cfg.pretrain.method == 'hf':
    _positive_int(cfg.pretrain.iterations, 'pretrain.iterations')
  if cfg.pretrain.open_shell not in ('uhf', 'rohf'):
    raise ConfigError(f"pretrain.open_shell={cfg.pretrain.open_shell!r} is not known; use "
                      "'uhf' or 'rohf'")
  if not 0.0 <= cfg.pretrain.hf_sample_weight <= 1.0:
    raise ConfigError('pretrain.hf_sample_weight must be within [0, 1]')
  if cfg.observables.density not in ('none', 'radial', 'grid'):
    raise ConfigError(f'observables.density={cfg.observables.density!r} is not known; use '
                      "'none', 'radial' or 'grid'")
  _positive_int(cfg.observables.density_bins, 'observables.density_bins')
  if cfg.observables.density_extent <= 0:
    raise ConfigError('observables.density_extent must be > 0 (bohr)')
  if cfg.distributed.mode not in ('auto', 'on', 'off'):
    raise ConfigError(f'distributed.mode={cfg.distributed.mode!r} is not known; use auto, on '
                      'or off')
  lo, hi = cfg.mcmc.target_acceptance
  if not 0 < lo <= hi < 1:
    raise ConfigError('mcmc.target_acceptance must be (low, high) with 0 < low <= high < 1')
  return Spec(system=system, cfg=cfg)
