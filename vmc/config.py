"""Configuration: every default lives here, once.

Key names follow FermiNet's where the concept is the same, so configs carry over.
`default()` holds production-sized defaults; `get_config()` (the job `vmc` runs with no
flags) is a small helium run that converges in a few minutes on a laptop CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from typing import Any
from collections.abc import Callable

import ml_collections
from ml_collections.config_dict import placeholder

from vmc import systems
from vmc.errors import ConfigError
from vmc.optimizers import NAMES as OPTIMIZERS

# The allowed values of the choice keys (their implementations check nothing again).
NETWORK_TYPES = ('ferminet', 'psiformer')
ENVELOPE_TYPES = ('isotropic', 'diagonal')
JASTROWS = ('default', 'simple_ee', 'none')
# 'forward': the network's own forward Laplacian (FermiNet), folx's for networks without.
LAPLACIANS = ('forward', 'loop', 'folx')
DENSITIES = ('none', 'radial', 'grid')


def default() -> ml_collections.ConfigDict:
  """Production defaults (FermiNet's where they exist)."""
  return ml_collections.ConfigDict({
      'batch_size': 4096,  # walkers, summed over all devices
      **_system_and_network(), **_optim(), **_run()})


def _system_and_network() -> dict:
  return {
    'system': {
        'atom': '',  # element symbol, e.g. 'Li'
        # A name (vmc.systems.MOLECULES) or [(symbol, (x, y, z)), ...]; typed `object` so
        # that --config.system.molecule=LiH works on top of any config file.
        'molecule': placeholder(object),
        'units': 'bohr',  # of system.molecule coordinates: 'bohr' or 'angstrom'
        'charge': 0,
        'spin': placeholder(int),  # 2S; None: Hund's rule for atoms, lowest for molecules
        'electrons': placeholder(tuple),  # (n_up, n_down); overrides charge and spin
        # Effective core potentials (docs/pseudopotentials.md): the elements in pp.symbols
        # (empty: every atom beyond He) lose their core electrons to a pp.type ECP.
        'use_pp': False,
        'pp': {
            'type': 'ccecp',  # from PySCF's tables
            'basis': 'ccecp-cc-pVDZ',  # Hartree-Fock basis of the ECP atoms (pretraining)
            'symbols': (),
            # Rule for the nonlocal angular integral, randomly rotated per electron and
            # iteration: 'octahedron' (6 points, exact to degree 3), 'icosahedron' (12,
            # degree 5), 'icosahedron32' (32, degree 9).
            'quadrature': 'icosahedron',
        },
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
  }

def _optim() -> dict:
  return {
    'optim': {
        # 'kfac', 'spring', 'minsr', 'adam' or 'none' (sampling only); docs/optimizers.md
        'optimizer': 'kfac',
        'iterations': 100000,
        # Exact Laplacian: 'forward' (one forward pass: FermiNet's own, using its
        # sparsity; for the Psiformer the same as 'folx'), 'loop' (jvp of the gradient
        # over 3N coordinates), 'folx' (folx's generic forward Laplacian).
        'laplacian': 'forward',
        # Walkers per device whose local energies are computed together; 0: chosen from
        # the estimated memory, all at once unless that exceeds 1 GiB per CPU device or
        # half an accelerator's memory (vmc.iteration.local_energy_chunk; the log says).
        # Lower it when the local energy runs out of memory; the result does not change.
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
        # Stochastic reconfiguration in kernel form (vmc/optimizers/sr.py): the step is
        # O^T (O O^T + damping I)^-1 e, O the centred per-walker gradients of log|psi|.
        'minsr': {
            'damping': 0.001,
            'norm_constraint': 0.001,  # bound on the squared Euclidean norm of a step
            'chunk_size': 0,  # walkers per device whose gradients are taken together (0: all)
        },
        'spring': {  # MinSR with SPRING's momentum-like term (Goldshlager et al. 2024)
            'damping': 0.001,
            'norm_constraint': 0.001,
            'chunk_size': 0,
            'mu': 0.99,  # weight of the previous direction; 0 gives MinSR
        },
        'adam': {
            'b1': 0.9,
            'b2': 0.999,
            'eps': 1.0e-8,
        },
    },
  }

def _run() -> dict:
  return {
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
        # Forces on the nuclei (hartree/bohr) by the hf, zv and zvzb estimators (vmc/forces.py),
        # in observables.h5 and summary.json; zvzb is the one to use.
        'forces': False,
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
  }


def get_config() -> ml_collections.ConfigDict:
  """The default job of `vmc` with no flags: helium, small network, a few minutes.

  SPRING rather than default()'s KFAC: for this job it ends nearer the exact energy with a
  ten times smaller error bar in the same time (README, docs/optimizers.md), and it runs
  on every supported JAX (kfac-jax 0.0.8 only on jax <= 0.9.1).
  """
  cfg = default()
  cfg.system.atom = 'He'
  cfg.optim.optimizer = 'spring'
  cfg.batch_size = 256
  cfg.network.determinants = 4
  cfg.network.ferminet.hidden_dims = ((32, 8), (32, 8))
  cfg.optim.iterations = 1000
  cfg.optim.lr.delay = 1000.0
  cfg.pretrain.iterations = 100
  return cfg




def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples the config holds."""
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def from_json(text: str) -> ml_collections.ConfigDict:
  """The config of a run from its config.json (or a checkpoint's header): the defaults of
  this vmc version, updated with every key the JSON holds."""
  cfg = default()

  def update(node: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
    for key, value in values.items():
      if key not in node:
        raise ConfigError(f'config key {prefix}{key} is unknown to this vmc version')
      if isinstance(value, dict) and value and hasattr(node[key], 'keys'):
        update(node[key], value, f'{prefix}{key}.')
      else:
        node[key] = _tuples(value)

  update(cfg, json.loads(text), '')
  return cfg


# ----------------------------------------------------------------------------------------
# Checks of single values. Each takes (value, key) and returns the value in its final type,
# or raises ConfigError naming the key and what it must be.

Check = Callable[[Any, str], Any]


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
      value)


MAX_INT = 2**31 - 1  # counts reach compiled code as int32


def _integer(low: int) -> Check:
  def check(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_INT:
      what = 'a positive integer' if low == 1 else f'an integer >= {low}'
      raise ConfigError(f'{key}={value!r} must be {what} (at most {MAX_INT})')
    return int(value)
  return check


def _number(low: float = -math.inf, high: float = math.inf, low_open: bool = False,
            high_open: bool = False, what: str = '') -> Check:
  """A finite number within [low, high] (an end excluded when open)."""
  def check(value: Any, key: str) -> float:
    ok = _is_number(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
      lo = f'{"(" if low_open else "["}{low:g}' if low > -math.inf else '(-inf'
      hi = f'{high:g}{")" if high_open else "]"}' if high < math.inf else 'inf)'
      raise ConfigError(f'{key}={value!r} must be a number in {lo}, {hi}{what}')
    return float(value)
  return check


def _one_of(*allowed: str) -> Check:
  def check(value: Any, key: str) -> str:
    if value not in allowed:
      raise ConfigError(f'{key}={value!r} is not known; use one of {", ".join(allowed)}')
    return value
  return check


def _boolean(value: Any, key: str) -> bool:
  if not isinstance(value, bool):
    raise ConfigError(f'{key}={value!r} must be True or False')
  return value


def _text(value: Any, key: str) -> str:
  if not isinstance(value, str):
    raise ConfigError(f'{key}={value!r} must be a string')
  return value


def _optional(check: Check) -> Check:
  return lambda value, key: None if value is None else check(value, key)


def _symbols(value: Any, key: str) -> tuple[str, ...]:
  if isinstance(value, str):
    value = tuple(v for v in value.replace(',', ' ').split() if v)
  if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
    raise ConfigError(f"{key}={value!r} must be element symbols, e.g. ('Na', 'Cl') or 'Na,Cl'")
  return tuple(value)


def _widths(value: Any, key: str) -> tuple[int, ...]:
  """A non-empty list of positive integer layer widths."""
  try:
    ok = len(value) > 0 and all(
        not isinstance(w, bool) and float(w) == int(w) and 0 < w <= MAX_INT for w in value)
  except (TypeError, ValueError, OverflowError):
    ok = False
  if not ok:
    raise ConfigError(f'{key}={value!r} must be a list of positive integer widths, e.g. '
                      '(256,)')
  return tuple(int(w) for w in value)


def _layer_pairs(value: Any, key: str) -> tuple[tuple[int, int], ...]:
  try:
    ok = len(value) > 0 and all(len(d) == 2 for d in value)
    pairs = tuple(_widths(d, key) for d in value) if ok else ()
  except (TypeError, ConfigError):
    ok = False
  if not ok:
    raise ConfigError(f'{key}={value!r} must be a non-empty list of (one-electron width, '
                      'two-electron width) integer pairs, e.g. ((64, 16), (64, 16))')
  return typing.cast(tuple[tuple[int, int], ...], pairs)


def _acceptance_window(value: Any, key: str) -> tuple[float, float]:
  try:
    lo, hi = (float(v) for v in value)
    ok = 0 < lo <= hi < 1
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ConfigError(f'{key}={value!r} must be (low, high) with 0 < low <= high < 1')
  return lo, hi


def _key(check: Check | None) -> Any:
  """A spec field read from the config key of the same name, through `check`."""
  return dataclasses.field(metadata={'check': check})


_POSITIVE = _integer(1)
_NON_NEGATIVE = _integer(0)
_FRACTION = _number(0.0, 1.0, high_open=True)  # [0, 1): decays, momenta


# ----------------------------------------------------------------------------------------
# The typed run spec: one frozen dataclass per config section, field names = key names.


@dataclasses.dataclass(frozen=True)
class FermiNetSpec:
  hidden_dims: tuple[tuple[int, int], ...] = _key(_layer_pairs)


@dataclasses.dataclass(frozen=True)
class PsiformerSpec:
  num_layers: int = _key(_POSITIVE)
  num_heads: int = _key(_POSITIVE)
  heads_dim: int = _key(_POSITIVE)
  mlp_hidden_dims: tuple[int, ...] = _key(_widths)
  use_layer_norm: bool = _key(_boolean)
  rescale_inputs: bool = _key(_boolean)


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  network_type: str = _key(_one_of(*NETWORK_TYPES))
  determinants: int = _key(_POSITIVE)
  full_det: bool = _key(_boolean)
  envelope_type: str = _key(_one_of(*ENVELOPE_TYPES))
  envelope_shared: bool = _key(_boolean)
  bias_orbitals: bool = _key(_boolean)
  jastrow: str = _key(_one_of(*JASTROWS))  # 'default' resolved: simple_ee or none
  ferminet: FermiNetSpec = _key(None)
  psiformer: PsiformerSpec = _key(None)


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """The `mcmc` section."""
  steps: int = _key(_POSITIVE)
  burn_in: int = _key(_NON_NEGATIVE)
  init_width: float = _key(_number(0.0, low_open=True, what=' (bohr)'))
  move_width: float = _key(_number(0.0, low_open=True, what=' (bohr)'))
  adapt_frequency: int = _key(_POSITIVE)
  target_acceptance: tuple[float, float] = _key(_acceptance_window)


@dataclasses.dataclass(frozen=True)
class LearningRateSpec:
  """rate / (1 + t / delay) ** decay."""
  rate: float = _key(_number(0.0))
  decay: float = _key(_number(0.0))
  delay: float = _key(_number(0.0, low_open=True, what=' (iterations)'))


@dataclasses.dataclass(frozen=True)
class KfacSpec:
  invert_every: int = _key(_POSITIVE)
  cov_update_every: int = _key(_POSITIVE)
  damping: float = _key(_number(0.0, low_open=True))
  cov_ema_decay: float = _key(_FRACTION)
  momentum: float = _key(_FRACTION)
  norm_constraint: float = _key(_number(0.0, low_open=True))
  min_damping: float = _key(_number(0.0))
  l2_reg: float = _key(_number(0.0))
  register_only_generic: bool = _key(_boolean)


@dataclasses.dataclass(frozen=True)
class MinsrSpec:
  damping: float = _key(_number(0.0, low_open=True))
  norm_constraint: float = _key(_number(0.0, low_open=True))
  chunk_size: int = _key(_NON_NEGATIVE)


@dataclasses.dataclass(frozen=True)
class SpringSpec(MinsrSpec):
  mu: float = _key(_FRACTION)


@dataclasses.dataclass(frozen=True)
class AdamSpec:
  b1: float = _key(_FRACTION)
  b2: float = _key(_FRACTION)
  eps: float = _key(_number(0.0, low_open=True))


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  optimizer: str = _key(_one_of(*OPTIMIZERS))
  iterations: int = _key(_POSITIVE)
  laplacian: str = _key(_one_of(*LAPLACIANS))
  local_energy_chunk_size: int = _key(_NON_NEGATIVE)
  clip_local_energy: float = _key(_number(0.0, low_open=True,
                                          what=' (mean absolute deviations)'))
  lr: LearningRateSpec = _key(None)
  kfac: KfacSpec = _key(None)
  minsr: MinsrSpec = _key(None)
  spring: SpringSpec = _key(None)
  adam: AdamSpec = _key(None)


@dataclasses.dataclass(frozen=True)
class PPSpec:
  """The `system.pp` section (read with system.use_pp; the system holds the ECP atoms)."""
  type: str = _key(_one_of('ccecp'))
  basis: str = _key(_text)
  symbols: tuple[str, ...] = _key(_symbols)
  quadrature: str = _key(_one_of('octahedron', 'icosahedron', 'icosahedron32'))


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
  method: str = _key(_one_of('hf', 'none'))
  iterations: int = _key(_NON_NEGATIVE)
  basis: str = _key(_text)
  open_shell: str = _key(_one_of('uhf', 'rohf'))
  lr: float = _key(_number(0.0, low_open=True))
  hf_sample_weight: float = _key(_number(0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class LogSpec:
  save_path: str = _key(_text)
  restore_path: str = _key(_text)
  save_frequency: float = _key(_number(0.0, what=' (minutes; 0: every iteration)'))
  keep: int = _key(_POSITIVE)
  print_every_seconds: float = _key(_number(0.0))
  stats_ewm_alpha: float = _key(_number(0.0, 1.0, low_open=True))


@dataclasses.dataclass(frozen=True)
class ObservablesSpec:
  dipole: bool = _key(_boolean)
  s2: bool = _key(_boolean)
  density: str = _key(_one_of(*DENSITIES))
  density_bins: int = _key(_POSITIVE)
  density_extent: float = _key(_number(0.0, low_open=True, what=' (bohr)'))
  forces: bool = _key(_boolean)

  @property
  def enabled(self) -> bool:
    return self.dipole or self.s2 or self.density != 'none' or self.forces


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
  mode: str = _key(_one_of('auto', 'on', 'off'))
  coordinator_address: str = _key(_text)
  num_processes: int | None = _key(_optional(_POSITIVE))
  process_id: int | None = _key(_optional(_NON_NEGATIVE))
  timeout_seconds: int = _key(_POSITIVE)


@dataclasses.dataclass(frozen=True)
class DebugSpec:
  deterministic: bool = _key(_boolean)
  seed: int | None = _key(_optional(_NON_NEGATIVE))
  max_bad_steps: int = _key(_POSITIVE)


@dataclasses.dataclass(frozen=True)
class Spec:
  """A checked, resolved run description: everything downstream reads this, not the
  ConfigDict. Field names are the config's section and key names."""
  system: systems.System
  pp: PPSpec | None  # system.pp when system.use_pp, else None
  batch_size: int
  network: NetworkSpec
  mcmc: SamplerSpec
  optim: OptimSpec
  pretrain: PretrainSpec
  log: LogSpec
  observables: ObservablesSpec
  distributed: DistributedSpec
  debug: DebugSpec
  config_json: str  # the resolved config, as written to config.json and checkpoints

  @property
  def evaluation(self) -> bool:
    """optim.optimizer='none': the wavefunction is frozen and only sampled."""
    return self.optim.optimizer == 'none'


def _build(cls: type, node: ml_collections.ConfigDict, prefix: str) -> Any:
  """cls from the config section `node`, every key through its field's check."""
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(node.keys()) - names)
  if unknown:  # a config file may add keys that the command line cannot
    raise ConfigError(f'{prefix}{unknown[0]} is not a config key; the keys and their '
                      'defaults are in vmc/config.py')
  values = {}
  for f in dataclasses.fields(cls):
    key = prefix + f.name
    if f.name not in node:
      raise ConfigError(f'config key {key} is missing; start the config from '
                        'vmc.config.default()')
    if f.metadata['check'] is None:
      values[f.name] = _build(hints[f.name], node[f.name], key + '.')
    else:
      values[f.name] = f.metadata['check'](node[f.name], key)
  return cls(**values)


_SECTIONS = {'network': NetworkSpec, 'mcmc': SamplerSpec, 'optim': OptimSpec,
             'pretrain': PretrainSpec, 'log': LogSpec, 'observables': ObservablesSpec,
             'distributed': DistributedSpec, 'debug': DebugSpec}


_SYSTEM_KEYS = ('atom', 'molecule', 'units', 'charge', 'spin', 'electrons', 'use_pp', 'pp')


def _pp(s: ml_collections.ConfigDict) -> PPSpec | None:
  """system.pp when system.use_pp (a config of an older version has neither key)."""
  if not _boolean(s.get('use_pp', False), 'system.use_pp'):
    return None
  return typing.cast(PPSpec, _build(PPSpec, s.pp, 'system.pp.'))


def resolve_system(cfg: ml_collections.ConfigDict) -> systems.System:
  """The system of a config alone (e.g. of an older run's config.json)."""
  return _system(cfg.system)


def _system(s: ml_collections.ConfigDict) -> systems.System:
  unknown = sorted(set(s.keys()) - set(_SYSTEM_KEYS))
  if unknown:
    raise ConfigError(f'system.{unknown[0]} is not a config key; the keys and their defaults '
                      'are in vmc/config.py')
  units = _one_of('bohr', 'angstrom')(s.units, 'system.units')
  charge = _integer(-1000)(s.charge, 'system.charge')
  pp = _pp(s)
  return systems.make_system(atom=s.atom or None, molecule=s.molecule, charge=charge,
                             spin=s.spin, electrons=s.electrons, units=units,
                             pseudopotential=pp.type if pp else '',
                             pp_symbols=pp.symbols if pp else ())


def resolve_variant(cfg: ml_collections.ConfigDict, overrides: dict[str, Any]) -> Spec:
  """The spec of `cfg` with dotted keys set, e.g. {'log.save_path': ...,
  'system.molecule': [...]}; `cfg` itself is unchanged (the runs of a scan are variants of
  one config)."""
  variant = copy.deepcopy(cfg)  # keeps the keys' declared types
  for key, value in overrides.items():
    node = variant
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return resolve(variant)


def resolve(cfg: ml_collections.ConfigDict) -> Spec:
  """Validates every key and resolves the system, once; raises ConfigError with the fix."""
  top = set(cfg.keys()) - set(_SECTIONS) - {'system', 'batch_size'}
  if top:
    raise ConfigError(f'{sorted(top)[0]} is not a config key; the keys and their defaults '
                      'are in vmc/config.py')
  sections = {name: _build(cls, cfg[name], name + '.') for name, cls in _SECTIONS.items()}
  net = sections['network']
  if net.jastrow == 'default':
    net = dataclasses.replace(
        net, jastrow='simple_ee' if net.network_type == 'psiformer' else 'none')
  pre = sections['pretrain']
  if pre.method == 'hf' and pre.iterations == 0:
    raise ConfigError("pretrain.iterations=0 with pretrain.method='hf'; give a positive "
                      "count or set pretrain.method='none'")
  system = _system(cfg.system)
  if system.pseudopotential and net.envelope_type == 'diagonal':
    raise ConfigError("network.envelope_type='diagonal' with system.use_pp: its envelopes "
                      "keep a cusp at the ECP nuclei; use 'isotropic'")
  if system.pseudopotential and sections['observables'].forces:
    raise ConfigError('observables.forces with system.use_pp: the force estimators are '
                      'all-electron only; set one of them to False')
  return Spec(system=system, pp=_pp(cfg.system),
              batch_size=_POSITIVE(cfg.batch_size, 'batch_size'),
              config_json=cfg.to_json_best_effort(indent=2), **dict(sections, network=net))
