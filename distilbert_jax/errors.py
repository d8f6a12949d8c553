"""The one error type the library raises for problems a user can fix.

Every message is one line that names the file, field or value at fault. The command line
(`main.py`) catches `Error` and prints it as `distilbert-jax: error: ...` with exit status 2;
anything else is a bug and keeps its traceback.
"""


class Error(Exception):
  """Bad input or an impossible request: a missing or corrupt file, a config that cannot run."""


class ConfigError(Error, ValueError):
  """A configuration that cannot run: an unknown or mistyped field, inconsistent settings."""


class TrainingError(Error, RuntimeError):
  """A run that cannot go on: a non-finite loss, an unreadable checkpoint, another model's checkpoint."""
