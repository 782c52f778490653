"""The wall clock of a run's statistics and budget (the wall_time column, vmc.budget).

One function, read through this module, so that a test can run a budget on a clock of its
own (tests/test_budget.py): how long a tiny run takes on the machine at hand then decides
nothing.
"""

from __future__ import annotations

import time


def now() -> float:
  """Seconds since the epoch."""
  return time.time()
