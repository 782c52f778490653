"""A wall-clock budget (vmc/budget.py): training stops at its share, the evaluation that
follows fits in the rest, and the same command afterwards changes nothing.

The runs here read a clock of the test's own (vmc.clock.now, patched): it advances a fixed
tick each time it is read, so that a run's shares, iterations and rates are the same on
any machine, however fast, and with a cold compilation cache. About one read per
iteration: a tick of 0.1 s gives a tiny run some hundred iterations of a one-minute
budget."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vmc import analysis, budget, checkpoint, clock, config as config_lib, loop, scans, train
from vmc.errors import ConfigError

from conftest import TickingClock, budgeted_config, tiny_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'scripts'))
import accuracy_suite  # noqa: E402


def _budgeted(tmp_path, minutes=1.0, **overrides):
  return config_lib.resolve(budgeted_config(str(tmp_path / 'run'), minutes, **overrides))


@pytest.fixture
def ticking(monkeypatch):
  """Installs a TickingClock of 0.1 s (its tick can be changed)."""
  fake = TickingClock(0.1)
  monkeypatch.setattr(clock, 'now', fake)
  return fake


def test_a_budgeted_run_trains_then_evaluates_within_its_budget(tmp_path, ticking):
  spec = _budgeted(tmp_path)
  t0 = ticking.t
  result = train.run(spec)
  elapsed = ticking.t - t0
  run = tmp_path / 'run'
  prep = json.loads((run / 'budget.json').read_text())['preparation_seconds']
  trained = analysis.read_stats(str(run))
  assert result.complete and 100 < result.steps < 1_000_000
  # Training ends at the first iteration past its share (half of 60 s, less preparation).
  assert 0 < prep and trained['wall_time'][-2] < 30.0 - prep <= trained['wall_time'][-1]
  evaluated = json.loads((run / 'evaluation' / 'summary.json').read_text())
  assert evaluated['mode'] == 'evaluation' and evaluated['iterations'] > 100
  assert abs(evaluated['energy'] - (-2.9037)) < 0.2  # a real helium energy
  left = json.loads((run / 'evaluation' / 'config.json').read_text())['budget_minutes']
  assert left * 60 == pytest.approx(60.0 - prep - trained['wall_time'][-1])
  assert 60.0 <= elapsed < 60.0 + 2.0  # the budget, and the few reads after it
  # The same command again: both phases complete, nothing trained or evaluated.
  before = {p: (run / p).read_bytes() for p in ('train_stats.csv', 'evaluation/eval_stats.csv')}
  assert train.run(spec).steps == result.steps
  assert all((run / p).read_bytes() == b for p, b in before.items())
  # A larger budget trains on; the evaluation of the earlier checkpoint is set aside.
  longer = train.run(_budgeted(tmp_path, minutes=1.5))
  assert longer.steps > result.steps
  old = run / f'evaluation_ckpt_{result.steps:06d}'
  assert (old / 'eval_stats.csv').read_bytes() == before['evaluation/eval_stats.csv']
  restored = json.loads((run / 'evaluation' / 'config.json').read_text())['log']['restore_path']
  assert restored == str(run / f'ckpt_{longer.steps:06d}.npz')
  assert json.loads((run / 'evaluation' / 'summary.json').read_text())['iterations'] > 100


def test_a_budget_spent_before_training_is_one_line_and_keeps_the_state(tmp_path, ticking):
  ticking.tick = 100.0  # the preparation outlasts the training's 30 s
  spec = _budgeted(tmp_path)
  with pytest.raises(train.RunAborted, match='raise budget_minutes'):
    train.run(spec)
  assert (tmp_path / 'run' / 'budget.json').exists()
  assert checkpoint.list_checkpoints(str(tmp_path / 'run'))  # the burned-in state


def test_scans_refuse_a_budget():
  cfg = tiny_config(budget_minutes=5.0)
  with pytest.raises(ConfigError, match='budget_minutes=0'):
    scans._spec(cfg, [('H', (0.0, 0.0, 0.0)), ('H', (0.0, 0.0, 1.4))])


def test_a_run_stopped_in_training_resumes_with_the_budget_it_had_left(tmp_path, monkeypatch,
                                                                      ticking):
  """SIGTERM at step 50: checkpoint, no evaluation; the same command continues the
  training to the same wall_time (the preparation read back, not measured again), then
  evaluates."""
  spec, run = _budgeted(tmp_path), tmp_path / 'run'
  original = budget.Deadline.after

  def after(self, t, state, row):
    original(self, t, state, row)
    if t == 50:
      os.kill(os.getpid(), signal.SIGTERM)
  with monkeypatch.context() as patch:
    patch.setattr(budget.Deadline, 'after', after)
    first = train.run(spec)
  assert (first.steps, first.complete) == (51, False)
  assert not (run / 'evaluation').exists()
  recorded = (run / 'budget.json').read_text()
  second = train.run(spec)
  assert second.complete and second.steps < 400  # on the test's clock: 0.1 s an iteration
  assert (run / 'budget.json').read_text() == recorded
  prep = json.loads(recorded)['preparation_seconds']
  walls = analysis.read_stats(str(run))['wall_time']
  assert walls[-2] < 30.0 - prep <= walls[-1] and len(walls) > 100
  assert json.loads((run / 'evaluation' / 'summary.json').read_text())['iterations'] > 100


WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'budget_worker.py')


@pytest.mark.slow
def test_a_second_run_cannot_take_over_a_live_evaluation(tmp_path, ticking):
  """Two processes on one folder: while the first evaluates in run/evaluation, the same
  command with a raised budget is refused (it once renamed the live evaluation folder, so
  that the first wrote its checkpoint and summary into the second's). Once the first has
  finished, the raised budget trains on and sets the finished evaluation aside whole."""
  run, marker, go = tmp_path / 'run', tmp_path / 'evaluating', tmp_path / 'go'
  first = subprocess.Popen([sys.executable, WORKER, str(run), '1.0', str(marker), str(go)],
                           env=dict(os.environ, JAX_PLATFORMS='cpu'), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    waited = time.monotonic()
    while not marker.exists():  # the first run trains (a few seconds), then evaluates
      assert first.poll() is None, first.communicate()[1][-3000:]
      assert time.monotonic() - waited < 600, 'the first run never reached its evaluation'
      time.sleep(0.1)
    before = sorted(p.relative_to(run) for p in run.rglob('*'))
    with pytest.raises(ConfigError, match=f'log.save_path={run} is in use by process '
                       f'{first.pid} '):
      train.run(_budgeted(tmp_path, minutes=1.5))
    assert sorted(p.relative_to(run) for p in run.rglob('*')) == before
  finally:
    go.touch()
    _, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-3000:]
  evaluated = json.loads((run / 'evaluation' / 'summary.json').read_text())
  trained = json.loads((run / 'summary.json').read_text())
  assert evaluated['mode'] == 'evaluation' and evaluated['iterations'] > 100
  assert not [p for p in os.listdir(run) if p.startswith('evaluation_')]
  eval_stats = (run / 'evaluation' / 'eval_stats.csv').read_bytes()
  longer = train.run(_budgeted(tmp_path, minutes=1.5))
  assert longer.steps > trained['iterations']
  aside = run / f'evaluation_ckpt_{trained["iterations"]:06d}'
  assert (aside / 'eval_stats.csv').read_bytes() == eval_stats
  assert json.loads((aside / 'summary.json').read_text()) == evaluated


def test_a_budget_that_leaves_almost_no_training_is_not_evaluated(tmp_path, ticking):
  """The training's share ends after two iterations (each 10 s on this clock): the run
  stops in one line instead of reporting the untrained wavefunction's energy, and the
  same command with a larger budget trains on and evaluates."""
  ticking.tick = 10.0
  with pytest.raises(train.RunAborted, match=r'budget: the training ended after \d '
                     r'iteration\(s\), when its share of budget_minutes=1 \(30 s, .*\) was '
                     'spent; .*none was run. Raise budget_minutes'):
    train.run(_budgeted(tmp_path))
  run = tmp_path / 'run'
  assert not (run / 'evaluation').exists() and checkpoint.list_checkpoints(str(run))
  ticking.tick = 0.1
  train.run(_budgeted(tmp_path, minutes=3.0))
  assert json.loads((run / 'evaluation' / 'summary.json').read_text())['iterations'] > 100
  assert len(analysis.read_stats(str(run))['step']) >= budget.MIN_TRAINING_ITERATIONS


def test_deadline_ends_the_phase_complete_at_the_first_row_past_it():
  rows = iter([0.5, 1.5, 2.5, 3.5])

  def step(state, t):
    return state + 1, {'wall_time': next(rows)}
  with loop.Signals() as signals:
    state, next_t, stopped = loop.iterate(step, 0, 0, 10, [budget.Deadline(2.0)], signals)
  assert (state, next_t, stopped) == (3, 3, False)


def test_no_evaluation_when_too_little_is_left(tmp_path):
  spec = _budgeted(tmp_path, minutes=1.0)  # 60 s in all
  os.makedirs(tmp_path / 'run')
  (tmp_path / 'run' / 'budget.json').write_text('{"preparation_seconds": 2.0}')
  (tmp_path / 'run' / 'ckpt_000010.npz').write_bytes(b'')  # the training's last checkpoint
  (tmp_path / 'run' / 'train_stats.csv').write_text('step,energy,wall_time\n0,-2.9,57.5\n')
  assert budget.evaluation_spec(spec, str(tmp_path / 'run')) is None  # 0.5 s left
  (tmp_path / 'run' / 'train_stats.csv').write_text('step,energy,wall_time\n0,-2.9,0.5\n')
  follow = budget.evaluation_spec(_budgeted(tmp_path, minutes=1.0), str(tmp_path / 'run'))
  assert follow.evaluation and follow.budget_minutes == pytest.approx((60 - 2.5) / 60)
  assert follow.log.restore_path == str(tmp_path / 'run' / 'ckpt_000010.npz')


def test_accuracy_suite_tabulates_finished_runs(tmp_path):
  for seed, energy in ((1, -37.8420), (2, -37.8410)):
    folder = tmp_path / f'C_seed{seed}'
    os.makedirs(folder / 'evaluation')
    (folder / 'evaluation' / 'summary.json').write_text(json.dumps(dict(
        system='C', energy=energy, energy_error=0.0004, iterations=500, variance=0.2,
        reference_energy=-37.845, reference_source='x', error_mha=(energy + 37.845) * 1e3,
        error_mha_error=0.4, error_converged=seed == 1,
        **({'energy_largest_step_shift': 2.5e-5} if seed == 1 else {}),
        provenance=dict(written_at='2026-12-06T20:12:44+00:00', git_commit='abc'))))
    (folder / 'summary.json').write_text(json.dumps(dict(iterations=9000, error_mha=2.5)))
    (folder / 'budget.json').write_text(json.dumps(dict(budget_minutes=60.0,
                                                        seconds_per_iteration=0.3)))
    (folder / 'config.json').write_text(json.dumps({'optim': {'lr': {'delay': 2500.0}}}))
    # seed 1 written before the suite recorded budgets: budget.json's is shown
    (folder / 'suite.json').write_text(json.dumps(dict(
        wall_seconds=3000.0, **({'budget_minutes': 45.0} if seed == 2 else {}))))
  os.makedirs(tmp_path / 'C_seed3')  # not finished: left out
  text = accuracy_suite.report(str(tmp_path))
  assert '| C | 2 | +3.50 | 0.71 | +4.00 | 50.0 |' in text
  assert '| C | C_seed1 | 60 | +3.00 | 0.40 | 0.2000 | 9000 | +2.50 | 50.0 |' in text
  assert '| C | C_seed2 | 45 | +4.00 | 0.40 (lower bound) |' in text
  rows = json.loads((tmp_path / 'accuracy.json').read_text())
  assert [r['run'] for r in rows] == ['C_seed1', 'C_seed2']
  assert np.isclose(rows[0]['error_mha'], 3.0)
  assert np.isclose(rows[0]['largest_step_shift_mha'], 0.025)
  assert rows[1]['largest_step_shift_mha'] is None  # a summary written before it existed
  assert (rows[0]['learning_rate_delay'], rows[0]['seconds_per_iteration'],
          rows[0]['written_at'][:10], rows[0]['git_commit']) == (2500.0, 0.3, '2026-12-06',
                                                                 'abc')
  assert accuracy_suite.system_flags('Li2') == ['--config.system.atom=',
                                                 '--config.system.molecule=Li2']
  assert accuracy_suite.system_flags('N') == ['--config.system.atom=N']


def test_the_accuracy_suite_reruns_a_run_only_for_a_larger_budget(tmp_path, monkeypatch):
  """A run finished at budget B (evaluated or not) is skipped for budgets up to B, and run
  again (vmc trains on and evaluates anew) for a larger one; the record keeps the budget
  that made the row."""
  calls = []

  def fake_vmc(cmd, **kwargs):
    calls.append(next(a for a in cmd if a.startswith('--config.budget_minutes=')))
    return subprocess.CompletedProcess(cmd, 0)
  monkeypatch.setattr(accuracy_suite.subprocess, 'run', fake_vmc)
  out = tmp_path / 'suite'
  os.makedirs(out / 'He_seed1')  # vmc would write the folder; here it stays empty

  def suite(minutes):
    assert accuracy_suite.main(['--systems', 'He', '--seeds', '1', '--budget', str(minutes),
                                '--out', str(out)]) == 0
    return json.loads((out / 'He_seed1' / 'suite.json').read_text())['budget_minutes']
  assert suite(2.0) == 2.0 and calls == ['--config.budget_minutes=2.0']
  assert suite(2.0) == 2.0 and suite(1.0) == 2.0 and len(calls) == 1  # skipped
  assert suite(5.0) == 5.0 and calls[-1] == '--config.budget_minutes=5.0'


def test_the_learning_rate_anneals_over_the_iterations_the_budget_allows(tmp_path, ticking):
  """delay_fraction: the first CALIBRATION_ITERATIONS time the step, then the schedule's
  delay is that fraction of the training iterations the budget allows at that rate."""
  spec = _budgeted(tmp_path, **{'budget_evaluation': 0.02, 'optim.lr.delay_fraction': 0.5})
  result = train.run(spec)
  run = tmp_path / 'run'
  recorded = json.loads((run / 'budget.json').read_text())
  per_iteration = recorded['seconds_per_iteration']
  allowed = (60.0 * 0.98 - recorded['preparation_seconds']) / per_iteration
  delay = json.loads((run / 'config.json').read_text())['optim']['lr']['delay']
  assert delay == max(1, round(0.5 * allowed))
  stats = analysis.read_stats(str(run))
  t, rate = stats['step'], spec.optim.lr.rate
  n = budget.CALIBRATION_ITERATIONS
  assert n + 20 < result.steps < 3.0 * allowed
  # The rate measured is the rate run: the calibrated step's iterations take what the
  # calibration measured.
  run_rate = np.median(np.diff(stats['wall_time'][n + 1:]))
  assert run_rate == pytest.approx(per_iteration, rel=0.5)
  np.testing.assert_allclose(stats['learning_rate'][:n], rate / (1 + t[:n] / 10000.0),
                             rtol=1e-5)
  np.testing.assert_allclose(stats['learning_rate'][n:], rate / (1 + t[n:] / delay),
                             rtol=1e-5)
  assert not (run / 'evaluation').exists()  # 1.2 s left: too little to evaluate
  # Rerun with a raised budget: the recorded rate, the delay of the larger budget.
  raised = _budgeted(tmp_path, 1.6, **{'budget_evaluation': 0.05,
                                       'optim.lr.delay_fraction': 0.5})
  assert budget.calibrated(raised, str(run)).optim.lr.delay == max(1, round(
      0.5 * (96.0 * 0.95 - recorded['preparation_seconds']) / per_iteration))


def test_delay_fraction_needs_a_budget_and_waits_for_a_rate(tmp_path):
  with pytest.raises(ConfigError, match='give budget_minutes too'):
    config_lib.resolve(tiny_config(**{'optim.lr.delay_fraction': 0.5}))
  spec = config_lib.resolve(tiny_config(**{'optim.lr.delay_fraction': 0.25,
                                           'budget_minutes': 10.0}))
  assert budget.calibrating(spec, str(tmp_path))
  assert budget.calibrated(spec, str(tmp_path)) is spec  # nothing measured yet
  (tmp_path / 'budget.json').write_text(json.dumps(
      {'preparation_seconds': 60.0, 'seconds_per_iteration': 0.5}))
  assert not budget.calibrating(spec, str(tmp_path))
  # 85% of 600 s less 60 s of preparation, at 0.5 s each: 900 iterations; a quarter.
  assert budget.calibrated(spec, str(tmp_path)).optim.lr.delay == 225.0
  rate = budget.Rate()
  for wall in (10.0, 10.5, 11.0, 11.5):  # the first row carries the compilation
    rate.after(0, None, {'wall_time': wall})
  assert rate.seconds_per_iteration() == 0.5


@pytest.mark.parametrize('content', [
    '[60.0, 12.5]', '{"preparation_seconds": NaN}', '{"seconds_per_iteration": 0}',
    '{"preparation_seconds": -4.0}', '{"budget_minutes": "an hour"}', 'garbage{'])
def test_a_damaged_budget_json_is_refused_in_one_line_before_anything_runs(tmp_path, content):
  """budget.json decides the phases' shares: a file the run did not write so is neither
  used nor replaced."""
  run = tmp_path / 'run'
  os.makedirs(run)
  (run / 'budget.json').write_text(content)
  with pytest.raises(ConfigError, match='budget.json .*restore it, or delete it') as error:
    train.run(_budgeted(tmp_path, **{'optim.lr.delay_fraction': 0.3}))
  assert '\n' not in str(error.value)
  assert os.listdir(run) == ['budget.json'] and (run / 'budget.json').read_text() == content
