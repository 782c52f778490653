"""A budgeted run for tests/test_budget.py that waits inside its evaluation phase.

  python tests/budget_worker.py SAVE_PATH MINUTES MARKER GO

The run (conftest.budgeted_config, on a TickingClock of 0.1 s) trains, then, as its
evaluation phase starts, creates the file MARKER and waits (at most 600 s) until the file
GO exists before it evaluates: the test meanwhile tries a second run on the same folder.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import logging  # noqa: E402
from conftest import TickingClock, budgeted_config  # noqa: E402

from vmc import clock, config as config_lib, train  # noqa: E402


def main(save_path: str, minutes: float, marker: str, go: str) -> None:
  logging.set_verbosity(logging.INFO)
  logging.set_stderrthreshold(logging.INFO)
  clock.now = TickingClock(0.1)
  original = train._train

  def waiting(spec, *args, **kwargs):
    if spec.evaluation:
      open(marker, 'w').close()
      for _ in range(6000):
        if os.path.exists(go):
          break
        time.sleep(0.1)
    return original(spec, *args, **kwargs)
  train._train = waiting
  train.run(config_lib.resolve(budgeted_config(save_path, minutes)))


if __name__ == '__main__':
  main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4])
