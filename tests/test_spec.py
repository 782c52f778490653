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


def test_kfac_jax_import_changes_no_jax_flag_that_vmc_has_not_set():
  """kfac-jax switches jax_pmap_shmap_merge off at import; vmc.parallel sets the same value
  for every run, so adam and none runs compile as kfac runs do, in any import order."""
  import subprocess
  import sys
  code = ('import jax; before = jax.config.jax_pmap_shmap_merge; import vmc.parallel; '
          'ours = jax.config.jax_pmap_shmap_merge; import kfac_jax; '
          'print(before, ours, jax.config.jax_pmap_shmap_merge)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=120)
  assert out.stdout.split() == ['True', 'False', 'False'], out.stderr[-1000:]


def test_unknown_system_keys_are_errors():
  cfg = _cfg()
  cfg.unlock()
  cfg.system.atomz = 'Li'
  with pytest.raises(ConfigError, match='system.atomz is not a config key'):
    config_lib.resolve(cfg)
