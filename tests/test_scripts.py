"""scripts/analyze.py and scripts/inspect_checkpoint.py on a tiny real run; the GPU check's
CPU dry run."""

import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest

from vmc import config as config_lib, iteration, networks, parallel, train

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'scripts'))
import analyze  # noqa: E402
import inspect_checkpoint  # noqa: E402


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  from conftest import tiny_config
  cfg = tiny_config('He', batch_size=64)
  cfg.optim.iterations = 30
  cfg.log.save_path = str(tmp_path_factory.mktemp('runs') / 'he_tiny')
  result = train.run(config_lib.resolve(cfg))
  result.config = cfg
  return result


@pytest.mark.slow
def test_analyze_prints_a_table_and_writes_a_png(finished_run, tmp_path, capsys,
                                                 monkeypatch):
  run = finished_run.save_path
  # A second run still in progress: no summary yet, a half-written last line.
  running = tmp_path / 'he_running'
  shutil.copytree(run, running)
  os.remove(running / 'summary.json')
  with open(running / 'train_stats.csv', 'a') as f:
    f.write('30,-2.9,-2.')
  png = tmp_path / 'plot.png'
  assert analyze.main([run, str(running), '--plot', str(png), '--window', '0.5']) == 0
  out = capsys.readouterr().out
  lines = out.splitlines()
  assert lines[0].split()[:4] == ['run', 'system', 'mode', 'iters']
  he_tiny, = [l for l in lines if l.startswith('he_tiny ')]
  assert he_tiny.split()[1:4] == ['He', 'training', '30']
  assert 'training (running)' in out
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 10000
  summary, stats = analyze.summarize_run(run, 0.5)
  assert summary['window_iterations'] == 15
  assert summary['energy'] == pytest.approx(stats['energy'][15:].mean())
  assert summary['reference_energy'] == pytest.approx(-2.903724377)
  assert summary['error_mha'] == pytest.approx(1000 * (summary['energy'] + 2.903724377))
  # A write that fails although the folder looked writable (a read-only file system, where
  # root's access check says yes): one line, exit 2.
  import errno

  def read_only(*args):
    raise OSError(errno.EROFS, 'Read-only file system')
  monkeypatch.setattr(analyze, 'plot', read_only)
  capsys.readouterr()
  assert analyze.main([run, '--plot', str(png)]) == 2
  assert capsys.readouterr().err == f'analyze.py: error: --plot {png}: Read-only file system\n'


def test_analyze_names_a_missing_run(tmp_path, capsys):
  assert analyze.main([str(tmp_path / 'nothing'), '--plot', '']) == 2
  assert 'nothing' in capsys.readouterr().err


def test_analyze_refuses_an_output_it_cannot_write_before_any_work(tmp_path, capsys):
  """--plot or --levels in a missing folder, in place of a folder, or under a file: one
  line, exit 2, before the runs are read (the run given here does not even exist)."""
  (tmp_path / 'a_file').write_text('')
  for flag, path, why in (('--plot', tmp_path / 'missing' / 'p.png', 'does not exist'),
                          ('--plot', tmp_path, 'is a folder'),
                          ('--levels', tmp_path / 'a_file' / 'levels.png', 'is a file')):
    assert analyze.main([str(tmp_path / 'no_run'), flag, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'{flag} {path}: ' in err and why in err, err
    assert 'no_run' not in err


def test_the_scripts_refuse_bad_arguments_in_one_line(tmp_path, capsys):
  import accuracy_suite
  import gpu_check
  for seeds in ('abc', '', '1.5', '-1'):
    with pytest.raises(SystemExit) as exit_:
      accuracy_suite.main(['--seeds', seeds, '--out', str(tmp_path / 'suite')])
    assert exit_.value.code == 2 and 'comma-separated list of non-negative integers' in (
        capsys.readouterr().err)
  (tmp_path / 'a_file').write_text('')
  for report in (tmp_path / 'missing', tmp_path / 'a_file'):
    assert accuracy_suite.main(['--report', str(report)]) == 2
    assert 'not a folder of suite runs' in capsys.readouterr().err
  assert gpu_check.main(['--out', str(tmp_path / 'a_file'), '--allow_cpu']) == 2
  assert 'gpu_check: error: --out' in capsys.readouterr().err
  assert not (tmp_path / 'suite').exists()


def test_inspect_checkpoint_reports_parameters_and_local_energies(finished_run, capsys):
  assert inspect_checkpoint.main([finished_run.save_path, '--walkers', '16']) == 0
  out = capsys.readouterr().out
  n = networks.count_parameters(parallel.first(finished_run.final_state.params))
  assert f'parameters  {n} in ' in out
  assert 'step 30' in out and 'walkers     64 x 2 electrons' in out
  energy_line, = [l for l in out.splitlines() if l.startswith('local energy')]
  # The same number straight from the run's final state (its checkpoint), compiled as the
  # script compiles it (eager evaluation differs by float32 round-off, a few 1e-6 Ha).
  spec = config_lib.resolve(finished_run.config)
  e_l = jax.jit(iteration.build(spec).objective.local_energy)(  # the run's own Laplacian
      parallel.first(finished_run.final_state.params),
      parallel.unshard(finished_run.final_state.mcmc.x)[:16])
  assert float(energy_line.split()[3]) == pytest.approx(float(np.mean(e_l)), abs=2e-6)


def test_inspect_checkpoint_rejects_a_broken_file(tmp_path, capsys):
  bad = tmp_path / 'ckpt_000001.npz'
  bad.write_bytes(b'not a zip')
  assert inspect_checkpoint.main([str(bad)]) == 2
  assert 'not a readable vmc checkpoint' in capsys.readouterr().err


def test_compare_optimizers_reports_thresholds_within_the_budget(tmp_path):
  """Synthetic Li runs: E(t) = exact + 50 mHa exp(-t / 200) (+-0.1 mHa), 0.1 s per
  iteration; a 60 s budget keeps 600 iterations of each."""
  import compare_optimizers
  from vmc import reference, systems, writers
  exact = reference.lookup(systems.make_system(atom='Li')).energy
  cfg = config_lib.default()
  cfg.system.atom = 'Li'
  t = np.arange(1000)
  energy = exact + 0.05 * np.exp(-t / 200.0) + 1e-4 * (-1.0) ** t
  for name, slower in (('Li_kfac', 1.0), ('Li_spring', 2.0)):
    run = tmp_path / name
    run.mkdir()
    (run / 'config.json').write_text(cfg.to_json_best_effort())
    with open(run / 'train_stats.csv', 'w') as f:
      f.write(','.join(writers.TRAIN_COLUMNS) + '\n')
      for i in t:
        f.write(f'{i},{energy[i]},0,0,0.5,0.1,0.2,0.05,0,{0.1 * slower * (i + 1)}\n')
  kfac = compare_optimizers.summarize(str(tmp_path / 'Li_kfac'), 60.0)
  spring = compare_optimizers.summarize(str(tmp_path / 'Li_spring'), 60.0)
  assert (kfac['iterations'], spring['iterations']) == (600, 300)
  moving = np.convolve(energy - exact, np.ones(100) / 100, mode='valid')  # ends at t = 99..
  for mha in (10, 5, 2, 1):
    first = int(np.argmax(np.abs(moving) <= mha / 1000.0)) + 100
    expected = [first, round(0.1 * first, 1)] if first <= 600 else None
    assert kfac[f'to_{mha}mHa'] == expected, mha
  assert spring['to_1mHa'] is None
  assert kfac['final_error_mha'] == pytest.approx(1000 * np.mean(energy[480:600] - exact))
  assert 0 < kfac['final_error_bar_mha'] < 1
  table = compare_optimizers.report(str(tmp_path), 60.0)
  assert '| Li | kfac | 0.100 | 600 |' in table and '| Li | spring | 0.200 | 300 |' in table


@pytest.mark.slow
def test_the_gpu_check_dry_run_on_cpu_writes_every_part(tmp_path, capsys):
  """scripts/gpu_check.py as prepared for a GPU, shrunk to a CPU dry run: device record,
  a helium run and a benchmark case, gathered in gpu_check.json and a table."""
  import gpu_check
  out = tmp_path / 'check'
  code = gpu_check.main(['--out', str(out), '--allow_cpu', '--he_iterations', '6',
                         '--batch_size', '32', '--bench_systems', 'He', '--network', 'small',
                         '--bench_batch_size', '8', '--bench_iterations', '1',
                         '--tolerance_mha', '5000'])
  result = json.loads((out / 'gpu_check.json').read_text())
  assert code == 0 and result['passed'], result
  assert result['device']['backend'] == 'cpu' and 'lapack' in result['device']['runtime']
  he = result['helium']
  assert he['iterations'] == 6 and he['batch'] == 32 and he['exit_code'] == 0
  assert abs(he['error_mha']) < 5000 and he['energy'] < -2.0
  assert [r['system'] for r in result['benchmark']['rows']] == ['He']
  assert '| He | 2 | 8 |' in capsys.readouterr().out
  # Without an accelerator and without --allow_cpu it stops at once.
  if jax.default_backend() == 'cpu':
    assert gpu_check.main(['--out', str(tmp_path / 'refused')]) == 1


def test_time_to_accuracy_reports_the_median_over_seeds(tmp_path):
  """Three synthetic Li runs that reach 10 mHa at different times, one never reaches 1 mHa:
  the per-checkout median is the middle crossing, and a run that never crosses counts as
  the slowest."""
  import time_to_accuracy
  from vmc import reference, systems, writers
  exact = reference.lookup(systems.make_system(atom='Li')).energy
  cfg = config_lib.default()
  cfg.system.atom = 'Li'
  t = np.arange(400)
  for seed, (scale, floor) in {7: (50, 0.0), 8: (100, 0.0), 9: (200, 0.002)}.items():
    run = tmp_path / f'abc_seed{seed}'
    run.mkdir()
    (run / 'config.json').write_text(cfg.to_json_best_effort())
    energy = exact + floor + 0.05 * np.exp(-t / scale)
    for name, rows in (('train_stats.csv', t), ('pretrain_stats.csv', t[:1])):
      with open(run / name, 'w') as f:
        f.write(','.join(writers.TRAIN_COLUMNS) + '\n')
        for i in rows:
          f.write(f'{i},{energy[i]},0,0,0.5,0.1,0.2,0.05,0,{float(i + 1)}\n')
  table = time_to_accuracy.report(str(tmp_path), window=10)
  rows = {r['run']: r for r in (time_to_accuracy.summarize(str(tmp_path / d), 10)
                                for d in sorted(os.listdir(tmp_path)))}
  tens = sorted(rows[f'abc_seed{s}']['10'][1] for s in (7, 8, 9))
  assert rows['abc_seed9']['1'] is None
  assert f'| abc | 3 | {tens[1]:.0f} (3/3) |' in table
  ones = sorted(rows[f'abc_seed{s}']['1'][1] for s in (7, 8))
  assert table.split('\n')[-3].endswith(f'| {ones[1]:.0f} (2/3) |')


def test_the_accuracy_suite_exits_non_zero_when_a_run_fails(tmp_path, capsys):
  import accuracy_suite
  out = tmp_path / 'suite'
  assert accuracy_suite.main(['--systems', 'Xx', '--seeds', '1', '--budget', '1',
                              '--out', str(out)]) == 1
  assert '1 run(s) failed (Xx seed 1)' in capsys.readouterr().err
  assert 'system.atom' in (out / 'Xx_seed1.log').read_text()  # vmc's own line, kept
