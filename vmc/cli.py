"""Command line: `vmc --config configs/atom.py --config.system.atom=Li ...`.

With no --config the job is vmc.config.get_config(): a small helium run.
"""

from __future__ import annotations

import logging as pylogging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from vmc import config as config_lib
from vmc.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(config_lib.__file__), 'config.py'),
    'Path to a config file with get_config(); override keys with --config.KEY=VALUE.',
    lock_config=True)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; options go as --config.KEY=VALUE')
  cfg = _CONFIG.value
  try:
    from vmc import train  # imported here so that --help stays fast
    spec = config_lib.resolve(cfg)
    train.run(spec)
  except ConfigError as e:
    if logging.get_verbosity() > logging.INFO:
      raise
    print(f'vmc: error: {e}', file=sys.stderr)
    sys.exit(2)


def _quiet_libraries(record) -> bool:
  """Drops kfac-jax's INFO-level graph dumps unless --verbosity asks for debug output."""
  noisy = 'kfac_jax' in record.pathname or 'xla_bridge' in record.pathname
  return not (noisy and record.levelno < pylogging.WARNING and
              logging.get_verbosity() <= logging.INFO)


def main():
  logging.get_absl_handler().addFilter(_quiet_libraries)
  app.run(_main)


if __name__ == '__main__':
  main()
