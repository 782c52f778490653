"""The errors a user sees as one line (vmc.cli prints them and exits non-zero)."""


class ConfigError(ValueError):
  """Bad user input. The message names the offending key and the fix, on one line (exit 2)."""


def one_line(error: BaseException | str, limit: int | None = None) -> str:
  """The text of an error on one line (its type's name if it has none), cut at `limit`."""
  text = ' '.join(str(error).split())[:limit]
  return text or (type(error).__name__ if isinstance(error, BaseException) else '')


class RunAborted(RuntimeError):
  """The run stopped itself (e.g. non-finite steps); the message says why and what next
  (exit 1)."""
