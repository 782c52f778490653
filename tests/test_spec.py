"""The typed run spec: every key validated at the door, with one line naming key and fix;
and the architecture rules that keep it so (config read in one place, short functions)."""

import ast
import dataclasses
import os
import pathlib

import pytest

from conftest import override
from vmc import config as config_lib
from vmc.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _cfg(**overrides):
  cfg = config_lib.default()
  cfg.system.atom = 'He'
  return override(cfg, **overrides)


@pytest.mark.parametrize('key, value, message', [
    ('mcmc.adapt_frequency', 0, 'mcmc.adapt_frequency=0 must be a positive integer'),
    ('mcmc.move_width', 0.0, 'mcmc.move_width=0.0 must be a number in (0, inf) (bohr)'),
    ('mcmc.init_width', -1.0, 'mcmc.init_width=-1.0'),
    ('mcmc.target_acceptance', (0.6, 0.5), 'mcmc.target_acceptance'),
    ('optim.lr.rate', -0.05, 'optim.lr.rate=-0.05 must be a number in [0, inf)'),
    ('optim.lr.delay', 0.0, 'optim.lr.delay=0.0 must be a number in (0, inf) (iterations)'),
    ('optim.lr.decay', -1.0, 'optim.lr.decay=-1.0'),
    ('optim.kfac.damping', 0.0, 'optim.kfac.damping=0.0'),
    ('optim.kfac.cov_ema_decay', 1.0, 'optim.kfac.cov_ema_decay=1.0 must be a number in [0, 1)'),
    ('optim.kfac.invert_every', 0, 'optim.kfac.invert_every=0 must be a positive integer'),
    ('optim.kfac.cov_update_every', 0, 'optim.kfac.cov_update_every=0'),
    ('optim.kfac.momentum', 1.0, 'optim.kfac.momentum=1.0'),
    ('optim.kfac.norm_constraint', 0.0, 'optim.kfac.norm_constraint=0.0'),
    ('optim.kfac.min_damping', -1e-4, 'optim.kfac.min_damping=-0.0001'),
    ('optim.kfac.l2_reg', -1.0, 'optim.kfac.l2_reg=-1.0'),
    ('optim.adam.b1', 1.0, 'optim.adam.b1=1.0'),
    ('optim.adam.eps', 0.0, 'optim.adam.eps=0.0'),
    ('optim.clip_local_energy', 0.0, 'optim.clip_local_energy=0.0'),
    ('optim.local_energy_chunk_size', -1, 'optim.local_energy_chunk_size=-1'),
    ('log.stats_ewm_alpha', 2.0, 'log.stats_ewm_alpha=2.0 must be a number in (0, 1]'),
    ('log.save_frequency', -1.0, 'log.save_frequency=-1.0 must be a number in [0, inf) (minutes'),
    ('log.keep', 0, 'log.keep=0 must be a positive integer'),
    ('log.print_every_seconds', -1.0, 'log.print_every_seconds=-1.0'),
    ('pretrain.lr', 0.0, 'pretrain.lr=0.0'),
    ('pretrain.hf_sample_weight', 1.5, 'pretrain.hf_sample_weight=1.5 must be a number in [0, 1]'),
    ('pretrain.iterations', 0, "pretrain.iterations=0 with pretrain.method='hf'"),
    ('network.ferminet.hidden_dims', ((16.5, 4),), 'network.ferminet.hidden_dims'),
    ('network.ferminet.hidden_dims', ((16, 4, 2),), 'network.ferminet.hidden_dims'),
    ('network.psiformer.mlp_hidden_dims', (0,), 'network.psiformer.mlp_hidden_dims'),
    ('network.determinants', 0, 'network.determinants=0 must be a positive integer'),
    ('observables.density_bins', 0, 'observables.density_bins=0'),
    ('distributed.timeout_seconds', 0, 'distributed.timeout_seconds=0'),
    ('debug.max_bad_steps', 0, 'debug.max_bad_steps=0'),
    ('debug.seed', -3, 'debug.seed=-3 must be an integer >= 0'),
    ('system.units', 'parsec', "system.units='parsec' is not known"),
])
def test_bad_values_are_one_line_errors_naming_the_key(key, value, message):
  with pytest.raises(ConfigError) as error:
    config_lib.resolve(_cfg(**{key: value}))
  text = str(error.value)
  assert message in text and '\n' not in text, text


def test_unknown_units_are_an_error_for_named_molecules_too():
  cfg = _cfg(**{'system.units': 'parsec'})
  cfg.system.atom = ''
  cfg.system.molecule = 'LiH'
  with pytest.raises(ConfigError, match="system.units='parsec'"):
    config_lib.resolve(cfg)


def test_keys_added_by_a_config_file_are_errors():
  cfg = config_lib.default()
  cfg.system.atom = 'He'
  cfg.unlock()
  cfg.no_such_key = 1
  with pytest.raises(ConfigError, match='no_such_key is not a config key'):
    config_lib.resolve(cfg)
  cfg = _cfg()
  cfg.unlock()
  cfg.mcmc.stepz = 3
  with pytest.raises(ConfigError, match='mcmc.stepz is not a config key'):
    config_lib.resolve(cfg)


def test_the_spec_mirrors_every_config_key():
  """Every key of default() is a field of the spec (so every key goes through a check),
  and the spec is frozen."""
  spec = config_lib.resolve(_cfg())

  def walk(node, obj, prefix):
    for key in node.keys():
      if key == 'system' and not prefix:
        continue  # resolved into a systems.System
      assert hasattr(obj, key), prefix + key
      if hasattr(node[key], 'keys'):
        walk(node[key], getattr(obj, key), f'{prefix}{key}.')

  walk(config_lib.default(), spec, '')
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.batch_size = 3
  assert spec.network.jastrow == 'none' and spec.optim.lr.rate == 0.05


def _python_files():
  return sorted((ROOT / 'vmc').rglob('*.py'))


def test_only_config_and_cli_know_ml_collections():
  users = [p.relative_to(ROOT).as_posix() for p in _python_files()
           if 'ml_collections' in p.read_text()]
  assert users == ['vmc/cli.py', 'vmc/config.py']


def test_no_function_is_longer_than_80_lines():
  long = []
  for path in _python_files():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > 80:
          long.append(f'{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)')
  assert not long, long


def test_kfac_jax_import_changes_no_jax_flag_that_a_run_has_not_set():
  """kfac-jax 0.0.8 switches jax_pmap_shmap_merge off at import on jax 0.9;
  runtime.configure gives every run that value first, so adam and none runs compile as
  kfac runs do. (On jax >= 0.10 there is no such flag, and nothing may change either.)"""
  import subprocess
  import sys
  code = ('import jax; from vmc import runtime; runtime.configure(); '
          'before = dict(jax.config.values); from vmc.optimizers import kfac_support; '
          'kfac_support.problem(); '
          'print(sorted(k for k in before if jax.config.values[k] != before[k]))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=120)
  assert out.stdout.split() == ['[]'], out.stderr[-1000:]


def test_unknown_system_keys_are_errors():
  cfg = _cfg()
  cfg.unlock()
  cfg.system.atomz = 'Li'
  with pytest.raises(ConfigError, match='system.atomz is not a config key'):
    config_lib.resolve(cfg)


# Bad values for every key of the config: each must be refused by `resolve` with one line
# naming the key. A config dict rebuilt from plain values (as a config file may write
# them) lets a value of the wrong type through to the checks, which must catch it too.
NAN = float('nan')
MOLECULE = {'system.atom': ''}
PP = {'system.atom': 'Na', 'system.use_pp': True}
BAD_VALUES = {
    'batch_size': [0, -1, 2.5, 2**31],
    'budget_minutes': [-1.0, NAN, 'an hour', 1e307, 0.4],
    'budget_evaluation': [0.0, 1.0, -0.1],
    'system.atom': ['Xx', 5],
    'system.molecule': [('NoSuchMolecule', MOLECULE),
                        ((('H', (0, 0, 0)), ('H', (0, 0, 0.001))), MOLECULE),
                        ((('H', (0, 0)),), MOLECULE), ((('H', (0, 0, NAN)),), MOLECULE),
                        ((), MOLECULE)],
    'system.units': [('angstrom!', {**MOLECULE, 'system.molecule': 'LiH'})],
    'system.charge': [2, 1.5],
    'system.spin': [1, -2],
    'system.electrons': [(1,), (-1, 1), (2, 1, {'system.charge': 1})],
    'system.use_pp': ['yes', True],  # True on He: no atom to put a pseudopotential on
    'system.states': [-1, 2.5, 17, (2, {'observables.density': 'radial'})],
    'system.pp.type': [('bfd', PP)],
    'system.pp.basis': [(5, PP)],
    'system.pp.symbols': [(('Cl',), PP), ((1,), PP)],
    'system.pp.quadrature': [('lebedev', PP)],
    'network.network_type': ['mlp'],
    'network.determinants': [0, 1.5],
    'network.full_det': ['yes'],
    'network.envelope_type': ['full'],
    'network.envelope_shared': [1],
    'network.bias_orbitals': ['no'],
    'network.jastrow': ['pade'],
    'network.ferminet.hidden_dims': [((16.5, 4),), (), ((16, 4, 2),), ((0, 4),)],
    'network.psiformer.num_layers': [0],
    'network.psiformer.num_heads': [0],
    'network.psiformer.heads_dim': [-64],
    'network.psiformer.mlp_hidden_dims': [(0,), ()],
    'network.psiformer.use_layer_norm': ['yes'],
    'network.psiformer.rescale_inputs': [2],
    'optim.optimizer': ['sgd'],
    'optim.iterations': [0, 2**31],
    'optim.laplacian': ['fd'],
    'optim.local_energy_chunk_size': [-1],
    'optim.clip_local_energy': [0.0, NAN],
    'optim.lr.rate': [-0.05, NAN],
    'optim.lr.decay': [-1.0],
    'optim.lr.delay': [0.0, -10.0],
    'optim.lr.delay_fraction': [-0.3, NAN, 1e308],
    'optim.kfac.invert_every': [0],
    'optim.kfac.cov_update_every': [0],
    'optim.kfac.damping': [0.0],
    'optim.kfac.cov_ema_decay': [1.0],
    'optim.kfac.momentum': [1.0],
    'optim.kfac.norm_constraint': [0.0],
    'optim.kfac.min_damping': [-1e-4],
    'optim.kfac.l2_reg': [-1.0],
    'optim.kfac.register_only_generic': ['true'],
    'optim.minsr.damping': [0.0, -1.0],
    'optim.minsr.norm_constraint': [0.0],
    'optim.minsr.chunk_size': [-1, 2.5],
    'optim.spring.damping': [0.0],
    'optim.spring.norm_constraint': [-1e-3],
    'optim.spring.chunk_size': [-1],
    'optim.spring.mu': [1.0, -0.1],
    'optim.adam.b1': [1.0],
    'optim.adam.b2': [-0.1],
    'optim.adam.eps': [0.0],
    'pretrain.method': ['ccsd'],
    'pretrain.iterations': [-1, 0],
    'pretrain.basis': [5],
    'pretrain.open_shell': ['ghf'],
    'pretrain.lr': [0.0],
    'pretrain.hf_sample_weight': [1.5],
    'mcmc.steps': [0, 10**20],
    'mcmc.burn_in': [-1],
    'mcmc.init_width': [0.0],
    'mcmc.move_width': [0.0, -0.1],
    'mcmc.adapt_frequency': [0],
    'mcmc.target_acceptance': [(0.6, 0.5), (0.0, 0.5), (0.5,)],
    'log.save_path': [5],
    'log.restore_path': [5],
    'log.save_frequency': [-1.0],
    'log.keep': [0],
    'log.print_every_seconds': [-1.0],
    'log.stats_ewm_alpha': [2.0, 0.0],
    'observables.dipole': ['yes'],
    'observables.s2': ['no'],
    'observables.forces': ['no'],
    'observables.density': ['cube'],
    'observables.density_bins': [0],
    'observables.density_extent': [0.0],
    'distributed.mode': ['maybe'],
    'distributed.coordinator_address': [5],
    'distributed.num_processes': [0],
    'distributed.process_id': [-1],
    'distributed.timeout_seconds': [0],
    'debug.deterministic': ['yes'],
    'debug.seed': [-3, 2**31],
    'debug.max_bad_steps': [0],
}
BAD_CASES = [(key, case if isinstance(case, tuple) and len(case) == 2 and isinstance(
    case[1], dict) else (case, {})) for key, cases in BAD_VALUES.items() for case in cases]


def _leaf_keys(node, prefix=''):
  for key in node.keys():
    if hasattr(node[key], 'keys'):
      yield from _leaf_keys(node[key], f'{prefix}{key}.')
    else:
      yield prefix + key


def test_the_bad_value_table_covers_every_key():
  assert sorted(_leaf_keys(config_lib.default())) == sorted(BAD_VALUES)


@pytest.mark.parametrize('key, case', BAD_CASES, ids=[f'{k}={c[0]!r}' for k, c in BAD_CASES])
def test_every_key_refuses_its_bad_values_in_one_line(key, case):
  import ml_collections
  value, others = case
  if isinstance(value, tuple) and len(value) == 3 and isinstance(value[2], dict):
    value, others = value[:2], value[2]  # (n_up, n_down) with other keys
  plain = config_lib.default().to_dict()
  plain['system']['atom'] = 'He'
  for k, v in {**others, key: value}.items():
    node = plain
    *path, last = k.split('.')
    for p in path:
      node = node[p]
    node[last] = v
  with pytest.raises(ConfigError) as error:
    config_lib.resolve(ml_collections.ConfigDict(plain))
  text = str(error.value)
  assert key in text and '\n' not in text, text


def test_a_repeated_config_flag_keeps_its_last_value():
  from vmc import cli
  args = ['--config.a=1', '--config.b', '2', '--config.a=3', '--config.b', '4', '--other']
  assert cli._last_flag_wins(args) == ['--config.a=3', '--config.b', '4', '--other']
  assert cli._last_flag_wins(['--config', 'c.py', '--config.a=1']) == [
      '--config', 'c.py', '--config.a=1']


def test_docs_config_md_is_the_generated_reference():
  """docs/config.md lists every key with its default; regenerate it with
  `python -m vmc.spec > docs/config.md` after changing vmc/spec.py."""
  from vmc import spec as spec_lib
  text = (ROOT / 'docs' / 'config.md').read_text()
  assert text == spec_lib.reference(), 'run: python -m vmc.spec > docs/config.md'
  for key in _leaf_keys(config_lib.default()):
    assert f'| `{key}` |' in text, key


def test_every_key_is_declared_once_with_a_check_and_a_doc():
  import dataclasses as dc
  import typing
  from vmc import spec as spec_lib

  def walk(cls):
    for f in dc.fields(cls):
      assert f.metadata.get('doc') is not None, f'{cls.__name__}.{f.name}'
      if f.metadata['check'] is None:
        walk(typing.get_type_hints(cls)[f.name])
      else:
        assert f.metadata['doc'], f'{cls.__name__}.{f.name} has no doc'
  walk(spec_lib.ConfigSpec)
