"""One vmc training process for tests/test_parallel.py, recording what it ends with.

  python tests/parallel_worker.py RESULT.npz KEY=JSON_VALUE ...

KEY=JSON_VALUE pairs override tests/conftest.py's tiny config (e.g. optim.iterations=20,
log.save_path='"run"'). RESULT.npz gets this process's index, the device and process
counts, the step reached, the energies, the largest difference between the devices'
copies of any parameter, and the first device's parameters (param_000, ...).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from conftest import tiny_config  # noqa: E402

from vmc import config as config_lib, parallel, train  # noqa: E402


def main(out: str, overrides: list[str]) -> None:
  logging.set_verbosity(logging.INFO)  # the run's log on stderr, as from the command line
  logging.set_stderrthreshold(logging.INFO)
  cfg = tiny_config(**{k: json.loads(v) for k, v in (o.split('=', 1) for o in overrides)})
  result = train.run(config_lib.resolve(cfg))
  leaves = [np.asarray(a) for a in
            jax.tree_util.tree_leaves(jax.device_get(result.final_state.params))]
  spread = max(float(np.max(np.abs(a - a[:1]))) for a in leaves)
  np.savez(out, process=parallel.process_index(), processes=parallel.process_count(),
           devices=parallel.global_device_count(), step=result.steps,
           energies=result.energies, device_spread=spread,
           **{f'param_{i:03d}': a[0] for i, a in enumerate(leaves)})


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2:])
