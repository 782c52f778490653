"""scripts/benchmark.py: named networks come from the configs; a tiny real case; the report."""

import json
import os
import sys

import pytest

from conftest import trainer
from vmc import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import benchmark  # noqa: E402


def _load(path):
  import importlib.util
  spec = importlib.util.spec_from_file_location('cfg', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize('name, expected', [
    ('small', lambda: config_lib.get_config()),
    ('default', lambda: config_lib.default()),
    ('psiformer_small', lambda: _load('configs/psiformer/small.py')),
    ('psiformer', lambda: _load('configs/psiformer/default.py')),
])
def test_benchmark_networks_are_those_of_the_configs(name, expected):
  case = dict(system='LiH', network=name, batch_size=32, optimizer='kfac',
              laplacian='forward', chunk=0, mcmc_steps=2)
  cfg = benchmark.make_config(case)
  assert cfg.network.to_dict() == expected().network.to_dict()
  assert cfg.system.molecule == 'LiH' and cfg.batch_size == 32 and cfg.mcmc.steps == 2


@pytest.mark.slow
def test_a_tiny_benchmark_prints_one_json_line_per_case(tmp_path, capsys):
  out = tmp_path / 'bench.jsonl'
  # One case (a subprocess each): the Laplacian methods agree by tests/test_laplacian.py.
  assert benchmark.main(['--system', 'He', '--network', 'small', '--laplacian', 'forward',
                         '--batch_size', '8', '--iterations', '2', '--mcmc_steps', '1',
                         '--optimizer', trainer(), '--profile', '--output', str(out)]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r['laplacian'] for r in rows] == ['forward']
  for r in rows:
    assert r['system'] == 'He' and r['electrons'] == 2 and r['batch'] == 8
    assert r['hamiltonian'] == 'all-electron' and r['variance'] > 0
    assert r['params'] > 0 and r['s_per_iter'] > 0 and r['peak_memory_gb'] > 0
    assert 0 < r['mcmc_s'] < r['s_per_iter'] and r['local_energy_s'] > 0
    assert r['walker_steps_per_s'] == pytest.approx(8 / r['s_per_iter'], rel=0.01)
  assert len(out.read_text().splitlines()) == 1


def test_pp_cases_put_ccecp_on_the_system():
  case = dict(system='S', network='small', batch_size=8, optimizer='kfac',
              laplacian='forward', chunk=0, mcmc_steps=1)
  from vmc import config as config_lib
  assert config_lib.resolve(benchmark.make_config(dict(case, pp='ccecp'))).system.hamiltonian \
      == 'ccecp[S]'
  assert config_lib.resolve(benchmark.make_config(dict(case, pp='off'))).pp is None
  with pytest.raises(SystemExit):
    benchmark.main(['--pp', 'bfd'])


def test_unknown_network_is_one_line_error(capsys):
  with pytest.raises(SystemExit) as e:
    benchmark.main(['--network', 'huge'])
  assert e.value.code == 2
  assert '--network huge: unknown' in capsys.readouterr().err


def _row(method, s, system='N2', electrons=14):
  return dict(system=system, electrons=electrons, network='default', params=1000, batch=256,
              laplacian=method, s_per_iter=s, s_per_iter_min=s, s_per_iter_max=s,
              peak_memory_gb=1.0)


def test_report_speed_ups_are_over_loop_only():
  table = benchmark.report([_row('loop', 4.0), _row('forward', 2.0), _row('folx', 3.2)])
  head, _, line = table.splitlines()[:3]
  assert 'forward speed-up' in head and 'folx speed-up' in head and 'loop speed-up' not in head
  assert '| 2.00x | 1.25x |' in line
  # Without loop there is nothing to compare against, but both methods keep their columns.
  table = benchmark.report([_row('forward', 2.0), _row('folx', 3.2)])
  head, _, line = table.splitlines()[:3]
  assert 'speed-up' not in head and 'forward s/iter' in head and 'folx s/iter' in head
  assert '| 2 (2–2) | 3.2 (3.2–3.2) |' in line


def test_report_fits_the_scaling_exponent():
  rows = [_row('loop', 0.1 * n ** 2, f'X{n}', n) for n in (2, 4, 8)]
  assert 's/iter ∝ N^2.00 over N = 2, 4, 8 electrons' in benchmark.report(rows)


def test_compare_report_puts_checkouts_side_by_side():
  old = dict(_row('forward', 0.3, 'He', 2), checkout='43d9e35')
  new = dict(_row('forward', 0.2, 'He', 2), checkout='abc1234', ratio=0.667, ratio_min=0.6,
             ratio_max=0.7, ratio_to='43d9e35')
  table = benchmark.compare_report([old, new])
  head, _, line = table.splitlines()
  assert '43d9e35 s/iter | abc1234 s/iter | abc1234 / 43d9e35' in head
  assert '| **0.667** (0.600–0.700) |' in line
  assert line.endswith('| 1.000 | 1.000 |')  # one peak: no range


def test_summary_keeps_the_range_of_peak_memory_over_rounds():
  case = dict(iterations=10, batch_size=256, mcmc_steps=10)
  rounds = [dict(_row('forward', s), compile_s=9.0, energy=-1.0, peak_memory_gb=gb)
            for s, gb in ((0.3, 2.2), (0.2, 2.1), (0.25, 2.15))]
  out = benchmark.summarize(case, rounds)
  assert (out['s_per_iter'], out['s_per_iter_min'], out['s_per_iter_max']) == (0.25, 0.2, 0.3)
  assert (out['peak_memory_gb'], out['peak_memory_gb_min']) == (2.2, 2.1)
  row = dict(out, checkout='abc1234')
  assert benchmark.compare_report([row]).splitlines()[2].endswith('| 2.200 (2.100–2.200) |')


def test_checkouts_are_git_revisions_or_directories(tmp_path, monkeypatch):
  monkeypatch.setenv('VMC_BENCHMARK_CHECKOUTS', str(tmp_path))
  label, script = benchmark.resolve_checkout('HEAD')  # the commit's tree, extracted once
  assert len(label) == 7 and os.path.isfile(script)
  assert script.startswith(str(tmp_path)) and benchmark.resolve_checkout('HEAD')[1] == script
  here = os.path.dirname(os.path.dirname(os.path.abspath(benchmark.__file__)))
  assert benchmark.resolve_checkout(here)[1] == os.path.join(here, 'scripts', 'benchmark.py')
  with pytest.raises(ValueError, match='neither a directory nor a git revision'):
    benchmark.resolve_checkout('no-such-revision')
