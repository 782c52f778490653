"""Every shipped config file loads, validates, and builds the network it names."""

import glob
import importlib.util
import os
import sys

import pytest

from vmc import config as config_lib, networks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True))


def _load(path):
  spec = importlib.util.spec_from_file_location('cfg', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize('path', FILES, ids=[os.path.relpath(f, ROOT) for f in FILES])
def test_config_file_resolves(path):
  cfg = _load(path)
  spec = config_lib.resolve(cfg)
  module = networks.make_module(spec.system, spec.network)
  expected = 'psiformer' if f'{os.sep}psiformer{os.sep}' in path else 'ferminet'
  assert cfg.network.network_type == expected
  assert type(module).__name__.lower() == expected


def test_psiformer_presets_differ_in_size():
  small = _load(os.path.join(ROOT, 'configs', 'psiformer', 'small.py'))
  default = _load(os.path.join(ROOT, 'configs', 'psiformer', 'default.py'))
  assert config_lib.resolve(small).network.jastrow == 'simple_ee'
  assert config_lib.resolve(default).network.jastrow == 'simple_ee'
  assert (default.network.psiformer.num_layers, default.network.psiformer.heads_dim) == (4, 64)
  assert small.network.psiformer.heads_dim * small.network.psiformer.num_heads == 64


@pytest.mark.parametrize('key, value, fragment', [
    ('network_type', 'transformer', 'network.network_type'),
    ('envelope_type', 'full', 'network.envelope_type'),
    ('jastrow', 'pade', 'network.jastrow'),
])
def test_unknown_network_options_name_the_key(key, value, fragment):
  cfg = config_lib.default()
  cfg.system.atom = 'He'
  cfg.network[key] = value
  with pytest.raises(config_lib.ConfigError, match=fragment):
    config_lib.resolve(cfg)


def _parse(path, args, monkeypatch):
  """The config as `vmc --config path args...` sees it (overrides are read from sys.argv)."""
  from absl import flags
  from ml_collections import config_flags
  argv = ['vmc', f'--config={path}'] + args
  monkeypatch.setattr(sys, 'argv', argv)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', path, flag_values=values, lock_config=True)
  values(argv)
  return values.config


def test_the_budget_preset_takes_its_budget_from_the_command_line(monkeypatch):
  path = os.path.join(ROOT, 'configs', 'budget.py')
  spec = config_lib.resolve(_parse(path, ['--config.budget_minutes=60'], monkeypatch))
  assert (spec.budget_minutes, spec.budget_evaluation, spec.optim.optimizer) == (
      60.0, 0.15, 'spring')
  assert spec.optim.iterations > 1_000_000  # the budget, not the count, ends training
  assert spec.optim.lr.delay_fraction == 0.3  # the learning rate anneals over the budget


@pytest.mark.parametrize('path', ['atom.py', 'psiformer/small.py', 'budget.py'])
def test_any_config_takes_a_molecule_from_the_command_line(path, monkeypatch):
  path = os.path.join(ROOT, 'configs', path)
  cfg = _parse(path, ['--config.system.atom=', '--config.system.molecule=LiH'], monkeypatch)
  assert config_lib.resolve(cfg).system.name == 'LiH'
  cfg = _parse(path, ['--config.system.atom=',
                      "--config.system.molecule=[('H', (0, 0, 0)), ('H', (0, 0, 1.4))]"],
               monkeypatch)
  assert config_lib.resolve(cfg).system.n_electrons == 2
