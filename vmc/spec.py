"""Every config key, once: its default, its check and a one-line doc, as typed dataclasses.

A leaf module (nothing of vmc but errors): one frozen dataclass per config section, field
names = key names (FermiNet's where the concept is the same). `vmc.config.default()` is
generated from these defaults, `vmc.config.resolve` builds the sections from a config
through the checks, and docs/config.md is `reference()` (a test keeps it current).
Factories receive their own section (e.g. `vmc.optimizers.kfac.make(kfac, lr, ...)`).

A field is declared with `key(default, check, doc)`; a key whose default is None (set by
the user or derived at run time) gives the type a config must hold, `unset=int`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from vmc.errors import ConfigError

# The allowed values of the choice keys (their implementations check nothing again).
NETWORK_TYPES = ('ferminet', 'psiformer')
ENVELOPE_TYPES = ('isotropic', 'diagonal')
JASTROWS = ('default', 'simple_ee', 'none')
# 'forward': the networks' own forward Laplacian (vmc.networks.ops), for every network.
LAPLACIANS = ('forward', 'loop', 'folx')
DENSITIES = ('none', 'radial', 'grid')
# The registry of vmc.optimizers has exactly these (a test checks); 'none' = evaluation.
OPTIMIZERS = ('kfac', 'spring', 'minsr', 'adam', 'none')
QUADRATURES = ('octahedron', 'icosahedron', 'icosahedron32')
PP_TYPES = ('ccecp',)  # effective core potentials, from PySCF's tables

MAX_INT = 2**31 - 1  # counts reach compiled code as int32
MAX_BUDGET_MINUTES = 1e6  # about two years
MIN_BUDGET_MINUTES = 1.0  # a training's budget: the SCF, pretraining and compilation first

# ----------------------------------------------------------------------------------------
# Checks of single values. Each takes (value, key) and returns the value in its final type,
# or raises ConfigError naming the key and what it must be.

Check = Callable[[Any, str], Any]


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
      value)


def integer(low: int) -> Check:
  def check(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_INT:
      what = 'a positive integer' if low == 1 else f'an integer >= {low}'
      raise ConfigError(f'{key}={value!r} must be {what} (at most {MAX_INT})')
    return int(value)
  return check


def number(low: float = -math.inf, high: float = math.inf, low_open: bool = False,
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


def one_of(*allowed: str) -> Check:
  def check(value: Any, key: str) -> str:
    if value not in allowed:
      raise ConfigError(f'{key}={value!r} is not known; use one of {", ".join(allowed)}')
    return value
  return check


def boolean(value: Any, key: str) -> bool:
  if not isinstance(value, bool):
    raise ConfigError(f'{key}={value!r} must be True or False')
  return value


def text(value: Any, key: str) -> str:
  if not isinstance(value, str):
    raise ConfigError(f'{key}={value!r} must be a string')
  return value


def optional(check: Check) -> Check:
  return lambda value, key: None if value is None else check(value, key)


def anything(value: Any, key: str) -> Any:
  """Checked later, with the other keys it needs (the system's keys: vmc.config)."""
  del key
  return value


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


POSITIVE = integer(1)
NON_NEGATIVE = integer(0)
_FRACTION = number(0.0, 1.0, high_open=True)  # [0, 1): decays, momenta
_POSITIVE_NUMBER = number(0.0, low_open=True)


def key(default: Any, check: Check, doc: str, unset: type | None = None) -> Any:
  """A config key: its default, the check of its values, a line of documentation; `unset`
  is the type of a key whose default is None."""
  return dataclasses.field(default=default,
                           metadata={'check': check, 'doc': doc, 'unset': unset})


def section(cls: type, doc: str = '') -> Any:
  """A nested section of keys."""
  return dataclasses.field(default_factory=cls, metadata={'check': None, 'doc': doc})


# ----------------------------------------------------------------------------------------
# The sections.


@dataclasses.dataclass(frozen=True)
class PPSpec:
  """`system.pp`: effective core potentials (docs/pseudopotentials.md)."""
  type: str = key('ccecp', one_of(*PP_TYPES), 'ECP family, from PySCF\'s tables')
  basis: str = key('ccecp-cc-pVDZ', text, 'Hartree-Fock basis of the ECP atoms (pretraining)')
  symbols: tuple[str, ...] = key((), _symbols,
                                 'elements that get the ECP; empty: every atom beyond He')
  quadrature: str = key(
      'icosahedron', one_of(*QUADRATURES),
      'rule of the nonlocal angular integral, randomly rotated per electron and iteration: '
      'octahedron (6 points, exact to degree 3), icosahedron (12, degree 5), icosahedron32 '
      '(32, degree 9)')


@dataclasses.dataclass(frozen=True)
class SystemSpec:
  """`system`: the atoms and electrons (atom, molecule, spin and electrons are checked
  together, by vmc.systems.make_system)."""
  atom: str = key('', anything, "element symbol, e.g. 'Li'")
  molecule: Any = key(None, anything, 'a name of vmc.systems.MOLECULES or [(symbol, (x, y, '
                      'z)), ...]; of type object, so --config.system.molecule=LiH works on '
                      'top of any config file', unset=object)
  units: str = key('bohr', one_of('bohr', 'angstrom'),
                   "of system.molecule coordinates: 'bohr' or 'angstrom'")
  charge: int = key(0, integer(-1000), 'total charge')
  spin: int | None = key(None, anything, "2S; None: Hund's rule for atoms, lowest for "
                         'molecules', unset=int)
  electrons: tuple[int, int] | None = key(None, anything, '(n_up, n_down); overrides '
                                          'charge and spin', unset=tuple)
  use_pp: bool = key(False, boolean, 'replace the core electrons of the system.pp.symbols '
                     'atoms by an ECP')
  states: int = key(0, NON_NEGATIVE, 'excited states: K > 0 trains the K lowest states of '
                    'the (n_up, n_down) sector together (NES-VMC, docs/excited_states.md); 0: '
                    'the ground state alone')
  pp: PPSpec = section(PPSpec)


@dataclasses.dataclass(frozen=True)
class FermiNetSpec:
  hidden_dims: tuple[tuple[int, int], ...] = key(
      ((256, 32),) * 4, _layer_pairs, '(one-electron width, two-electron width) per layer')


@dataclasses.dataclass(frozen=True)
class PsiformerSpec:
  """`network.psiformer`: as published (von Glehn et al. 2023)."""
  num_layers: int = key(4, POSITIVE, 'self-attention layers')
  num_heads: int = key(4, POSITIVE, 'attention heads')
  heads_dim: int = key(64, POSITIVE, 'width of a head; attention width = num_heads * '
                       'heads_dim')
  mlp_hidden_dims: tuple[int, ...] = key((256,), _widths, 'hidden widths of the MLP of a '
                                         'layer')
  use_layer_norm: bool = key(True, boolean, 'layer normalisation in each layer')
  rescale_inputs: bool = key(True, boolean, 'electron-nucleus distances as log(1 + r)')


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  network_type: str = key('ferminet', one_of(*NETWORK_TYPES), 'ferminet or psiformer')
  determinants: int = key(16, POSITIVE, 'number of determinants')
  full_det: bool = key(True, boolean, 'dense N x N determinants; False: spin-block '
                       'determinants')
  envelope_type: str = key('isotropic', one_of(*ENVELOPE_TYPES),
                           'isotropic: exp(-sigma |r - R|); diagonal: exp(-|sigma * (r - '
                           'R)|), sigma a 3-vector per nucleus and orbital')
  envelope_shared: bool = key(False, boolean, 'one envelope per orbital for all '
                              'determinants')
  bias_orbitals: bool = key(False, boolean, 'a bias in the orbital layer')
  # 'default' is resolved by vmc.config: simple_ee for the Psiformer, none for FermiNet.
  jastrow: str = key('default', one_of(*JASTROWS), 'simple_ee (electron-electron cusp), '
                     'none, or default: simple_ee for the Psiformer, none for FermiNet')
  ferminet: FermiNetSpec = section(FermiNetSpec)
  psiformer: PsiformerSpec = section(PsiformerSpec)


@dataclasses.dataclass(frozen=True)
class LearningRateSpec:
  """`optim.lr`: rate / (1 + t / delay) ** decay."""
  rate: float = key(0.05, number(0.0), 'rate / (1 + t / delay) ** decay')
  decay: float = key(1.0, number(0.0), 'exponent of the decay')
  delay: float = key(10000.0, number(0.0, low_open=True, what=' (iterations)'),
                     'iterations to the first halving (decay 1)')
  delay_fraction: float = key(0.0, number(0.0, 100.0),
                              'with budget_minutes: delay = this x the training iterations '
                              'the budget allows (their rate measured on the first '
                              'iterations, kept in budget.json); 0: delay as given')


@dataclasses.dataclass(frozen=True)
class KfacSpec:
  """`optim.kfac`: kfac-jax's options (FermiNet's defaults)."""
  invert_every: int = key(1, POSITIVE, 'iterations between inversions of the factors')
  cov_update_every: int = key(1, POSITIVE, 'iterations between curvature updates')
  damping: float = key(0.001, _POSITIVE_NUMBER, 'Tikhonov damping of the curvature')
  cov_ema_decay: float = key(0.95, _FRACTION, 'decay of the curvature moving average')
  momentum: float = key(0.0, _FRACTION, 'momentum')
  norm_constraint: float = key(0.001, _POSITIVE_NUMBER, 'bound on the step\'s squared '
                               'Fisher norm')
  min_damping: float = key(1.0e-4, number(0.0), 'lower bound of the damping')
  l2_reg: float = key(0.0, number(0.0), 'L2 regularisation of the parameters')
  register_only_generic: bool = key(False, boolean, 'generic curvature blocks only')


@dataclasses.dataclass(frozen=True)
class MinsrSpec:
  """`optim.minsr`: stochastic reconfiguration in kernel form (vmc/optimizers/sr.py), the
  step O^T (O O^T + damping I)^-1 e, O the centred per-walker gradients of log|psi|."""
  damping: float = key(0.001, _POSITIVE_NUMBER, 'damping of the Gram matrix')
  norm_constraint: float = key(0.001, _POSITIVE_NUMBER, 'bound on the squared Euclidean '
                               'norm of a step')
  chunk_size: int = key(0, NON_NEGATIVE, 'walkers per device whose gradients are taken '
                        'together (0: all)')


@dataclasses.dataclass(frozen=True)
class SpringSpec(MinsrSpec):
  """`optim.spring`: MinSR with SPRING's momentum-like term (Goldshlager et al. 2024)."""
  mu: float = key(0.99, _FRACTION, 'weight of the previous direction; 0 gives MinSR')


@dataclasses.dataclass(frozen=True)
class AdamSpec:
  b1: float = key(0.9, _FRACTION, 'decay of the first moment')
  b2: float = key(0.999, _FRACTION, 'decay of the second moment')
  eps: float = key(1.0e-8, _POSITIVE_NUMBER, 'added to the root of the second moment')


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  optimizer: str = key('kfac', one_of(*OPTIMIZERS), 'kfac, spring, minsr, adam, or none '
                       '(an evaluation: the wavefunction frozen and sampled; '
                       'docs/optimizers.md)')
  iterations: int = key(100000, POSITIVE, 'training (or evaluation) iterations; after a '
                        'warm start from log.restore_path, counted on from its step')
  laplacian: str = key('forward', one_of(*LAPLACIANS),
                       "exact Laplacian: 'forward' (one forward pass, the network's own, "
                       "using its sparsity: vmc.networks.ops), 'loop' (jvp of the gradient "
                       "over 3N coordinates), 'folx' (folx's generic forward Laplacian)")
  local_energy_chunk_size: int = key(
      0, NON_NEGATIVE, 'walkers per device whose local energies are computed together; 0: '
      'from the estimated memory (all at once unless over 1 GiB per CPU device or half an '
      'accelerator; the log says). Lower it when the local energy runs out of memory: the '
      'result does not change')
  clip_local_energy: float = key(5.0, number(0.0, low_open=True,
                                             what=' (mean absolute deviations)'),
                                 'clip at median +- this many mean absolute deviations')
  lr: LearningRateSpec = section(LearningRateSpec)
  kfac: KfacSpec = section(KfacSpec)
  minsr: MinsrSpec = section(MinsrSpec)
  spring: SpringSpec = section(SpringSpec)
  adam: AdamSpec = section(AdamSpec)


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
  method: str = key('hf', one_of('hf', 'none'), 'hf: fit the orbitals to Hartree-Fock '
                    '(PySCF); none')
  iterations: int = key(1000, NON_NEGATIVE, 'pretraining iterations')
  basis: str = key('ccpvdz', text, 'Hartree-Fock basis (PySCF name)')
  open_shell: str = key('uhf', one_of('uhf', 'rohf'), 'SCF of open shells (closed: RHF)')
  lr: float = key(1.0e-2, _POSITIVE_NUMBER, "Adam's rate; FermiNet's 3e-4 fits far too "
                  'slowly (docs/pretraining.md)')
  hf_sample_weight: float = key(1.0, number(0.0, 1.0), 'walkers sample (w |psi_HF| + (1 '
                                '- w) |psi_net|)^2')


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """The `mcmc` section: Metropolis sampling."""
  steps: int = key(10, POSITIVE, 'Metropolis moves per iteration')
  burn_in: int = key(100, NON_NEGATIVE, 'iterations of `steps` moves before training')
  init_width: float = key(1.0, number(0.0, low_open=True, what=' (bohr)'),
                          'bohr; spread of the initial electrons around their nuclei')
  move_width: float = key(0.02, number(0.0, low_open=True, what=' (bohr)'),
                          'bohr; initial Gaussian move width, then adapted')
  adapt_frequency: int = key(100, POSITIVE, 'iterations between move-width adaptations')
  target_acceptance: tuple[float, float] = key((0.5, 0.55), _acceptance_window,
                                               'the width is adapted to keep the acceptance '
                                               'in this window')


@dataclasses.dataclass(frozen=True)
class LogSpec:
  save_path: str = key('', text, 'run folder; default: checkpoints/<system>_<UTC time>')
  restore_path: str = key('', text, 'a run folder or ckpt_*.npz to start from')
  save_frequency: float = key(10.0, number(0.0, what=' (minutes; 0: every iteration)'),
                              'minutes between checkpoints')
  keep: int = key(3, POSITIVE, 'newest checkpoints kept')
  print_every_seconds: float = key(5.0, number(0.0), 'seconds between progress lines')
  stats_ewm_alpha: float = key(0.1, number(0.0, 1.0, low_open=True),
                               'weight of the newest step in ewmean/ewvar')


@dataclasses.dataclass(frozen=True)
class ObservablesSpec:
  """Measured per iteration, for evaluation runs (optim.optimizer='none')."""
  dipole: bool = key(False, boolean, 'electric dipole moment (a.u.): columns dipole_x/y/z')
  s2: bool = key(False, boolean, '<S^2>: column s2')
  density: str = key('none', one_of(*DENSITIES), "'radial' or 'grid' spin densities, in "
                     'observables.h5')
  density_bins: int = key(100, POSITIVE, 'radial bins, or grid points per axis')
  density_extent: float = key(8.0, number(0.0, low_open=True, what=' (bohr)'),
                              'bohr: radius of the profile, half side of the grid cube')
  forces: bool = key(False, boolean, 'forces on the nuclei (hartree/bohr) by the hf, zv '
                     'and zvzb estimators (vmc/forces.py; zvzb is the one to use)')

  @property
  def enabled(self) -> bool:
    return self.dipole or self.s2 or self.density != 'none' or self.forces


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
  mode: str = key('auto', one_of('auto', 'on', 'off'),
                  'auto: start jax.distributed when coordinator_address is set or srun/'
                  'mpirun launched several processes; on: always; off: never')
  coordinator_address: str = key('', text, "HOST:PORT of process 0; '': from the launcher")
  num_processes: int | None = key(None, optional(POSITIVE), 'None: from the launcher',
                                  unset=int)
  process_id: int | None = key(None, optional(NON_NEGATIVE), 'None: from the launcher',
                               unset=int)
  timeout_seconds: int = key(300, POSITIVE, 'to wait at start-up for all processes')


@dataclasses.dataclass(frozen=True)
class DebugSpec:
  deterministic: bool = key(False, boolean, 'fixed seed (debug.seed, or 23 if unset)')
  seed: int | None = key(None, optional(NON_NEGATIVE), 'explicit seed; else drawn at random '
                         'and logged', unset=int)
  max_bad_steps: int = key(10, POSITIVE, 'consecutive non-finite steps (each rolled back) '
                           'before the run stops')


@dataclasses.dataclass(frozen=True)
class ConfigSpec:
  """The whole config, in the order of config.json."""
  batch_size: int = key(4096, POSITIVE, 'walkers, summed over all devices')
  budget_minutes: float = key(0.0, number(0.0, MAX_BUDGET_MINUTES, what=' (minutes)'),
                              'wall-clock budget of the run, 0: none, else at least 1 for a '
                              'training. Training stops at '
                              '(1 - budget_evaluation) of it (or at optim.iterations), then '
                              'the trained wavefunction is evaluated (optimizer none) in '
                              '<save_path>/evaluation until the budget is spent '
                              '(docs/accuracy.md)')
  budget_evaluation: float = key(0.15, number(0.0, 1.0, low_open=True, high_open=True),
                                 "share of budget_minutes for the evaluation phase")
  system: SystemSpec = section(SystemSpec)
  network: NetworkSpec = section(NetworkSpec)
  optim: OptimSpec = section(OptimSpec)
  pretrain: PretrainSpec = section(PretrainSpec)
  mcmc: SamplerSpec = section(SamplerSpec)
  log: LogSpec = section(LogSpec)
  observables: ObservablesSpec = section(ObservablesSpec)
  distributed: DistributedSpec = section(DistributedSpec)
  debug: DebugSpec = section(DebugSpec)


# ----------------------------------------------------------------------------------------
# Generated from the declarations.


class Unset(typing.NamedTuple):
  """The default of a key that is None until set: the type a value must have."""
  type: type


def defaults(cls: type = ConfigSpec) -> dict[str, Any]:
  """{key: default or Unset(type) or nested dict} of a section, in declaration order."""
  out: dict[str, Any] = {}
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if f.metadata['check'] is None:
      out[f.name] = defaults(hints[f.name])
    elif f.metadata['unset'] is not None:
      out[f.name] = Unset(f.metadata['unset'])
    else:
      out[f.name] = f.default
  return out


def build(cls: type, node: Mapping[str, Any], prefix: str = '') -> Any:
  """cls from the config section `node`, every key through its field's check."""
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(node.keys()) - names)
  if unknown:  # a config file may add keys that the command line cannot
    raise ConfigError(f'{prefix}{unknown[0]} is not a config key; the keys and their '
                      'defaults are in docs/config.md')
  values = {}
  for f in dataclasses.fields(cls):
    name = prefix + f.name
    if f.name not in node:
      raise ConfigError(f'config key {name} is missing; start the config from '
                        'vmc.config.default()')
    if f.metadata['check'] is None:
      values[f.name] = build(hints[f.name], node[f.name], name + '.')
    else:
      values[f.name] = f.metadata['check'](node[f.name], name)
  return cls(**values)


def _leaves(cls: type, prefix: str) -> Iterator[tuple[str, dataclasses.Field, type]]:
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if f.metadata['check'] is None:
      yield from _leaves(hints[f.name], f'{prefix}{f.name}.')
    else:
      yield prefix + f.name, f, cls


def reference() -> str:
  """docs/config.md: every key with its default and meaning, by section."""
  lines = ['# Configuration keys', '',
           'Generated from `vmc/spec.py` by `python -m vmc.spec > docs/config.md` (a test '
           'keeps it current). Set any key on the command line with `--config.<key>=<value>`'
           '; key names follow FermiNet\'s where the concept is the same.', '']
  section_of = None
  for name, f, cls in _leaves(ConfigSpec, ''):
    head = name.rsplit('.', 1)[0] if '.' in name else '(top level)'
    if head != section_of:
      section_of = head
      about = (cls.__doc__ or '').strip() if cls is not ConfigSpec else ''
      lines += ['', f'## {head}', '']
      if about and not about.startswith(cls.__name__):
        lines += [' '.join(about.split()), '']
      lines += ['| key | default | meaning |', '|---|---|---|']
    default = 'None' if f.metadata['unset'] is not None else repr(f.default)
    doc = f.metadata['doc'].replace('|', '\\|')
    lines.append(f'| `{name}` | `{default}` | {doc} |')
  return '\n'.join(lines[:3] + lines[4:]) + '\n'


if __name__ == '__main__':
  print(reference(), end='')
