"""Errors that reach the user: one readable message that says what to change.

Imported by the results side too, so it imports nothing heavy.
"""


class SweepError(Exception):
    """Base class: the command line prints these as one line, without a traceback."""


class ConfigError(SweepError):
    """A config key holds a value we cannot run; the message names the key."""


class TaskError(SweepError):
    """The task's prompts or answers cannot be used with this model; names file and line."""


class StoreError(SweepError):
    """The store at ``store.path`` cannot be used as it is; the message names it."""


class StoreMismatchError(StoreError):
    """The store was written by a config that gives different results."""


class StoreBusyError(StoreError):
    """Another live driver holds the store's lease."""


class StoreDamagedError(StoreError):
    """A metadata file or chunk of the store cannot be read."""


class Interrupted(SweepError):
    """The sweep was stopped by a signal; the store is consistent and resumable."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
