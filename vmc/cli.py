"""Command line: `vmc --config configs/atom.py --config.system.atom=Li ...`.

With no --config the job is vmc.config.get_config(): a small helium run.
"""

from __future__ import annotations

import difflib
import logging as pylogging
import os
import sys
import traceback
import typing
from collections.abc import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from vmc import config as config_lib, runtime
from vmc.errors import ConfigError, RunAborted, one_line

_DEFAULT_CONFIG = os.path.join(os.path.dirname(config_lib.__file__), 'config.py')
_CONFIG = None


def _define_config_flag():
  """Defines --config. ml_collections reads the --config.KEY overrides in sys.argv right
  here and rejects an unknown key, so that error is turned into one line too."""
  try:
    return config_flags.DEFINE_config_file(
        'config', _DEFAULT_CONFIG,
        'Path to a config file with get_config(); override keys with --config.KEY=VALUE.',
        lock_config=True)
  except (AttributeError, KeyError) as e:
    print(f'vmc: error: {_unknown_key_message(sys.argv[1:]) or one_line(e)}',
          file=sys.stderr)
    sys.exit(2)


def _unknown_key_message(args: list[str]) -> str | None:
  """Names the first --config.KEY that the default config lacks, with a suggestion."""
  for arg in args:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.'):].split('=')[0].split('.')
    node = config_lib.default()
    for depth, part in enumerate(path):
      if not hasattr(node, 'keys') or part not in node:
        siblings = list(node.keys()) if hasattr(node, 'keys') else []
        close = difflib.get_close_matches(part, siblings, n=1)
        hint = f" (did you mean {'.'.join(path[:depth] + close[:1])}?)" if close else ''
        return (f'--config.{".".join(path)}: no such config key{hint}; the keys and their '
                'defaults are in docs/config.md')
      node = node[part]
  return None


def _last_flag_wins(args: list[str]) -> list[str]:
  """The command line with each --config.KEY given once, at its last value.

  ml_collections would append repeated values of a tuple-valued key (a network silently
  gets more layers); a repeated flag replaces here, as it does for every other option.
  Both `--config.KEY=VALUE` and `--config.KEY VALUE` are understood.
  """
  spans = []  # (key, first index, number of items)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg.startswith('--config.'):
      key, has_value, _ = arg.partition('=')
      n = 1 if has_value or i + 1 == len(args) or args[i + 1].startswith('--') else 2
      spans.append((key, i, n))
      i += n
    else:
      i += 1
  last = {key: start for key, start, _ in spans}
  drop = {j for key, start, n in spans if last[key] != start for j in range(start, start + n)}
  return [a for j, a in enumerate(args) if j not in drop]


def _run_vmc(cfg: ml_collections.ConfigDict) -> None:
  from vmc import train  # imported here so that --help stays fast
  train.run(config_lib.resolve(cfg))


def _main(argv: list[str], job: Callable[[ml_collections.ConfigDict], None]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; options go as --config.KEY=VALUE')
  assert _CONFIG is not None  # defined by main()
  try:
    # A file that failed to load is an object that raises on first use: used here.
    cfg = _CONFIG.value
    cfg.keys()
  except OSError as e:
    _config_file_failed(e)
  try:
    job(cfg)
  except ConfigError as e:
    _fail(e, 2)
  except RunAborted as e:
    _fail(e, 1)


def _fail(error: Exception, code: int) -> None:
  """One line on stderr and a non-zero exit; --verbosity=1 shows the traceback."""
  if logging.get_verbosity() > logging.INFO:
    raise error
  print(f'vmc: error: {one_line(error)}', file=sys.stderr)
  sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a bad flag or config key reported on one line (exit 2)."""
  try:
    return flags.FLAGS(argv)
  except OSError as e:
    _config_file_failed(e)
  except flags.Error as e:
    print(f'vmc: error: {one_line(e)} (vmc --helpfull lists the flags; config keys are '
          'in docs/config.md)', file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # noqa: BLE001  (a config file is user code: any error is possible)
    unknown = _unknown_key_message(argv[1:])  # an override of a key the file lacks
    if unknown:
      print(f'vmc: error: {unknown}', file=sys.stderr)
      sys.exit(2)
    print(f'vmc: error: the config file raised {type(e).__name__}: {one_line(e)} '
          f'(at {_user_frame(e)}); fix the config file', file=sys.stderr)
    sys.exit(2)


def _config_file_failed(error: OSError) -> typing.NoReturn:
  """A --config file that cannot be read: one line, exit 2."""
  given = [a.partition('=')[2] or (sys.argv[i + 2] if i + 2 < len(sys.argv) else '')
           for i, a in enumerate(sys.argv[1:]) if a == '--config' or a.startswith('--config=')]
  path = given[-1] if given else ''
  if path and not os.path.isfile(path):
    print(f'vmc: error: --config {path}: no such file (configs/ has the shipped ones)',
          file=sys.stderr)
  else:
    print(f'vmc: error: cannot load the config file: {one_line(error)}', file=sys.stderr)
  sys.exit(2)


def _user_frame(error: Exception) -> str:
  """file:line of the error in the user's code: the innermost frame outside Python's and
  the libraries' own files (a SyntaxError names its place itself)."""
  if isinstance(error, SyntaxError):
    return f'{error.filename}:{error.lineno}'
  frames = traceback.extract_tb(error.__traceback__)
  ours = [f for f in frames if not f.filename.startswith('<') and
          'site-packages' not in f.filename and 'importlib' not in f.filename]
  where = (ours or frames)[-1]
  return f'{where.filename}:{where.lineno}'


def _quiet_libraries(record: pylogging.LogRecord) -> bool:
  """Drops kfac-jax's INFO-level graph dumps unless --verbosity asks for debug output."""
  noisy = 'kfac_jax' in record.pathname or 'xla_bridge' in record.pathname
  return not (noisy and record.levelno < pylogging.WARNING and
              logging.get_verbosity() <= logging.INFO)


def main(job: Callable[[ml_collections.ConfigDict], None] = _run_vmc) -> None:
  """The `vmc` command; scripts that run vmc jobs (scripts/scan.py) pass their own `job`,
  which gets the config of --config and its overrides: errors are reported as for vmc."""
  global _CONFIG
  sys.argv[1:] = _last_flag_wins(sys.argv[1:])
  _CONFIG = _define_config_flag()
  logging.get_absl_handler().addFilter(_quiet_libraries)
  app.run(lambda argv: _main(argv, job), flags_parser=_parse_flags)


def entry() -> None:
  """The `vmc` console script and `python -m vmc`: restarts once where malloc should ask
  for huge pages (vmc/runtime.py), then main()."""
  runtime.reexec_with_huge_pages()
  main()


if __name__ == '__main__':
  entry()
