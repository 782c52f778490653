import numpy as np
import pytest

from vmc import analysis


def test_moving_mean_and_milestone():
  np.testing.assert_allclose(analysis.moving_mean(np.arange(5.0), 2), [0.5, 1.5, 2.5, 3.5])
  # Energies fall as -1 - 0.1 * exp(-t / 50): within 5 mHa of -1 once the window mean is.
  t = np.arange(1000)
  e = -1.0 + 0.1 * np.exp(-t / 50.0)
  reached = analysis.iterations_to_reach(e, -1.0, 0.005, window=100)
  m = analysis.moving_mean(e, 100)
  assert m[reached - 100] <= 0.005 - 1.0 + 1e-12 < m[reached - 101] + 1e-12
  assert analysis.iterations_to_reach(e, -2.0, 0.005) is None
  assert analysis.iterations_to_reach(e[:50], -1.0, 0.005) is None


def test_read_stats(tmp_path):
  (tmp_path / 'train_stats.csv').write_text('step,energy\n0,-1.5\n1,-1.75\n')
  stats = analysis.read_stats(str(tmp_path))
  np.testing.assert_array_equal(stats['energy'], [-1.5, -1.75])


def test_seconds_per_iteration_ignores_compilation_and_restarts():
  wall = np.cumsum(np.r_[30.0, np.full(99, 0.25)])  # 30 s compile, then 0.25 s/it
  wall[60:] += 40.0  # a restart: compile again
  assert analysis.seconds_per_iteration({'wall_time': wall}) == 0.25
  assert analysis.seconds_per_iteration({'wall_time': wall}, skip=0) == 0.25
  with pytest.raises(ValueError, match='need more than 11 iterations'):
    analysis.seconds_per_iteration({'wall_time': wall[:5]})


def test_summary_line_says_when_the_error_bar_is_a_lower_bound():
  rng = np.random.default_rng(0)
  white = -1.0 + 0.01 * rng.normal(size=4096)
  # A slow drift: autocorrelated over the whole window, so no block length is long enough.
  drift = -1.0 + 0.01 * np.cumsum(rng.normal(size=4096)) / 30.0
  for energies, bound in ((white, False), (drift, True)):
    summary = analysis.summarize_stats({'energy': energies, 'variance': np.ones(4096)}, 1.0)
    assert summary['error_converged'] is (not bound)
    line = analysis.summary_lines(summary)[0]
    assert ('a lower bound' in line) is bound, line


def test_summary_names_a_single_iteration_that_moves_the_energy():
  rng = np.random.default_rng(1)
  energies = -1.0 + 0.01 * rng.normal(size=4096)
  steps = np.arange(4096) + 500
  quiet = analysis.summarize_stats({'energy': energies, 'step': steps}, 1.0)
  assert analysis.heavy_tail_note(quiet) is None
  assert all('heavy tail' not in line for line in analysis.summary_lines(quiet))
  # One walker far off at one iteration (step 2500): a step mean 1 Ha high.
  energies[2000] = 0.0
  energies[3000] = np.nan  # a rejected iteration: left out, never the largest
  loud = analysis.summarize_stats({'energy': energies, 'step': steps}, 1.0)
  assert loud['energy_largest_step'] == 2500
  finite = energies[np.isfinite(energies)]
  without = np.delete(finite, 2000)
  np.testing.assert_allclose(loud['energy_largest_step_shift'], finite.mean() - without.mean(),
                             rtol=1e-10)
  note = analysis.heavy_tail_note(loud)
  assert note is not None and 'step 2500' in note, note
  assert f'{1000 * loud["energy_largest_step_shift"]:+.2f} mHa' in note
  assert note in analysis.summary_lines(loud)
  # The same outlier in 50 iterations: too few for the note to mean anything.
  short = analysis.summarize_stats({'energy': energies[1960:2010]}, 1.0)
  assert short['energy_largest_step'] == 40 and analysis.heavy_tail_note(short) is None
