"""The errors a user sees as one line (vmc.cli prints them and exits non-zero)."""


class ConfigError(ValueError):
  """Bad user input. The message names the offending key and the fix, on one line (exit 2)."""


class RunAborted(RuntimeError):
  """The run stopped itself (e.g. non-finite steps); the message says why and what next
  (exit 1)."""
