"""Errors that reach the user: one readable message that says what to change."""


class SweepError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(SweepError):
    """A config key holds a value we cannot run; the message names the key."""


class TaskError(SweepError):
    """The task's prompts or answers cannot be used with this model."""


class StoreMismatchError(SweepError):
    """The store at store.path was written by a config that gives different results."""
