"""The one error type a user sees for bad input."""


class ConfigError(ValueError):
  """Bad user input. The message names the offending key and the fix, on one line."""
