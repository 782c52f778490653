"""The config of a run: `default()` and `get_config()` as ConfigDicts, and `resolve`, the
one door from a config to the checked, typed `Spec` that everything downstream reads.

Every key, its default, check and doc are declared once, in vmc/spec.py; `default()` is
generated from there. Key names follow FermiNet's where the concept is the same, so
configs carry over. `default()` holds production-sized defaults; `get_config()` (the job
`vmc` runs with no flags) is a small helium run that converges in a few minutes on a
laptop CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import resource
import typing
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from vmc import spec as spec_lib, systems
from vmc.errors import ConfigError
from vmc.spec import (DebugSpec, DistributedSpec, LogSpec, NetworkSpec, ObservablesSpec,
                      OptimSpec, PPSpec, PretrainSpec, SamplerSpec)


def _config_dict(defaults: dict[str, Any]) -> dict[str, Any]:
  return {k: _config_dict(v) if isinstance(v, dict) else
          placeholder(v.type) if isinstance(v, spec_lib.Unset) else v
          for k, v in defaults.items()}


def default() -> ml_collections.ConfigDict:
  """Production defaults (FermiNet's where they exist), from vmc/spec.py."""
  return ml_collections.ConfigDict(_config_dict(spec_lib.defaults()))


def get_config() -> ml_collections.ConfigDict:
  """The default job of `vmc` with no flags: helium, small network, a few minutes.

  SPRING rather than default()'s KFAC: for this job it ends nearer the exact energy with a
  ten times smaller error bar in the same time (docs/optimizers.md), and it runs
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
  states: int  # system.states: K > 0 excited states (vmc.states), 0 the ground state alone
  budget_minutes: float  # 0: none; else vmc.budget shares it between training and evaluation
  budget_evaluation: float  # the evaluation's share of a budget
  config_json: str  # the resolved config, as written to config.json and checkpoints

  @property
  def mode(self) -> str:
    """'evaluation' or 'training' (vmc.writers.STATS_FILES names their statistics)."""
    return 'evaluation' if self.evaluation else 'training'

  @property
  def evaluation(self) -> bool:
    """The run's mode: an evaluation (optim.optimizer='none', FermiNet's value) samples the
    frozen wavefunction and counts its own iterations; else a training."""
    return self.optim.optimizer == 'none'


def system_from_json(text: str) -> systems.System:
  """The system of a run's config.json (or a checkpoint's header), resolved as the run
  resolved it."""
  return resolve_system(from_json(text))


# The sections that resolve as they are (the system is resolved into a systems.System).
_TOP_KEYS = ('system', 'batch_size', 'budget_minutes', 'budget_evaluation')
_SECTIONS = {name: cls for name, cls in typing.get_type_hints(spec_lib.ConfigSpec).items()
             if name not in _TOP_KEYS}


def resolve_system(cfg: ml_collections.ConfigDict) -> systems.System:
  """The system of a config alone (e.g. of an older run's config.json)."""
  return _system(cfg.system)[0]


def _system(node: ml_collections.ConfigDict) -> tuple[systems.System, PPSpec | None]:
  """The system and its ECP options (None unless system.use_pp)."""
  s = spec_lib.build(spec_lib.SystemSpec, node, 'system.')
  pp = s.pp if s.use_pp else None
  system = systems.make_system(atom=s.atom or None, molecule=s.molecule, charge=s.charge,
                               spin=s.spin, electrons=s.electrons, units=s.units,
                               pseudopotential=pp.type if pp else '',
                               pp_symbols=pp.symbols if pp else ())
  return system, pp


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
  top = set(cfg.keys()) - set(_SECTIONS) - set(_TOP_KEYS)
  if top:
    raise ConfigError(f'{sorted(top)[0]} is not a config key; the keys and their defaults '
                      'are in docs/config.md')
  sections = {name: spec_lib.build(cls, cfg[name], name + '.')
              for name, cls in _SECTIONS.items()}
  net = sections['network']
  if net.jastrow == 'default':
    net = dataclasses.replace(
        net, jastrow='simple_ee' if net.network_type == 'psiformer' else 'none')
  pre = sections['pretrain']
  if pre.method == 'hf' and pre.iterations == 0:
    raise ConfigError("pretrain.iterations=0 with pretrain.method='hf'; give a positive "
                      "count or set pretrain.method='none'")
  system, pp = _system(cfg.system)
  if system.pseudopotential and net.envelope_type == 'diagonal':
    raise ConfigError("network.envelope_type='diagonal' with system.use_pp: its envelopes "
                      "keep a cusp at the ECP nuclei; use 'isotropic'")
  if system.pseudopotential and sections['observables'].forces:
    raise ConfigError('observables.forces with system.use_pp: the force estimators are '
                      'all-electron only; set one of them to False')
  batch = spec_lib.POSITIVE(cfg.batch_size, 'batch_size')
  fields = {f.name: f for f in dataclasses.fields(spec_lib.ConfigSpec)}
  budget = {name: fields[name].metadata['check'](cfg[name], name)
            for name in ('budget_minutes', 'budget_evaluation')}
  minutes = budget['budget_minutes']
  if 0 < minutes < spec_lib.MIN_BUDGET_MINUTES and sections['optim'].optimizer != 'none':
    raise ConfigError(f'budget_minutes={minutes:g}: a training budget under '
                      f'{spec_lib.MIN_BUDGET_MINUTES:g} minute is spent before training '
                      '(SCF, pretraining, compilation); give at least '
                      f'{spec_lib.MIN_BUDGET_MINUTES:g}, or 0 for no budget')
  if sections['optim'].lr.delay_fraction and not minutes:
    raise ConfigError('optim.lr.delay_fraction sets the learning-rate delay from a wall-clock '
                      'budget; give budget_minutes too, or set optim.lr.delay instead')
  _check_density_grid(sections['observables'], batch, sections['optim'].iterations)
  _check_kernel_memory(sections['optim'].optimizer, batch)
  states = _check_states(cfg.system.states, sections['observables'])
  return Spec(system=system, pp=pp, batch_size=batch, states=states, **budget,
              config_json=cfg.to_json_best_effort(indent=2), **dict(sections, network=net))


MAX_STATES = 16  # each iteration costs K^2 local energies of N electrons


def _check_states(value: Any, obs: spec_lib.ObservablesSpec) -> int:
  """system.states, checked against what excited states support (docs/excited_states.md).
  1 is the ground state through the excited-state path (the same energies as 0)."""
  states = spec_lib.NON_NEGATIVE(value, 'system.states')
  if states == 0:
    return 0
  if states > MAX_STATES:
    raise ConfigError(f'system.states={states}: at most {MAX_STATES} (an iteration costs '
                      'states^2 local energies); ask for fewer states')
  for name, on in (('forces', obs.forces), ('density', obs.density != 'none')):
    if on:
      raise ConfigError(f'observables.{name} with system.states={states}: this observable is '
                        'of one state; excited-state runs measure energies, dipoles, '
                        'oscillator strengths and <S^2> of each state '
                        f'(docs/excited_states.md); turn {name} off')
  return states


def _memory_bytes() -> int:
  """This machine's memory, or the process's address-space limit where that is lower."""
  have = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  limit = resource.getrlimit(resource.RLIMIT_AS)[0]
  return min(have, limit) if limit != resource.RLIM_INFINITY else have


def _check_kernel_memory(optimizer: str, batch: int) -> None:
  """MinSR and SPRING solve with an n x n matrix of all n walkers on every device (float32:
  the matrix, its Cholesky factor and the damped copy, vmc/optimizers/sr.py): a batch
  whose matrices exceed the machine's memory is refused before the run, not after its SCF
  and pretraining."""
  if optimizer not in ('spring', 'minsr'):
    return
  need, have = 3 * 4 * batch ** 2, _memory_bytes()
  if need > have:
    largest = int((have / 12) ** 0.5)
    raise ConfigError(
        f'optim.optimizer={optimizer} with batch_size={batch} needs {batch} x {batch} '
        f'matrices of about {need / 2 ** 30:,.0f} GiB on every device, more than the '
        f'{have / 2 ** 30:.1f} GiB this process may use; use batch_size <= {largest} or '
        "optim.optimizer='kfac'")


def _check_density_grid(obs: spec_lib.ObservablesSpec, batch: int, iterations: int) -> None:
  """A spin-density grid that cannot be indexed or held is refused before the run: its
  bins^3 cells are indexed in int32; each walker fills two grids (up, down) in the step;
  the run keeps two grids per iteration in memory until it writes observables.h5."""
  if obs.density != 'grid':
    return
  cells = obs.density_bins ** 3
  if 2 * cells >= 2 ** 31:
    raise ConfigError(f'observables.density_bins={obs.density_bins}: a grid of '
                      f'{obs.density_bins}^3 cells per spin cannot be indexed (int32); use at '
                      'most 1000')
  need = 2 * cells * 4 * (batch + iterations)  # float32: the step's grids and the kept ones
  have = _memory_bytes()
  if need > have:
    raise ConfigError(
        f'observables.density_bins={obs.density_bins} needs about {need / 2 ** 30:.1f} GiB '
        f'(two grids of {obs.density_bins}^3 float32 per walker of the batch of {batch} and '
        f'per iteration of {iterations}), more than the {have / 2 ** 30:.1f} GiB this '
        'process may use; use fewer density_bins, a smaller batch_size or fewer '
        'optim.iterations')
