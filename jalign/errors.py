"""Error classes shared by every layer of jalign.

:class:`UserError` marks a problem with the user's input (a configuration value, a data file, a workdir, a
registry name): the command line prints its message on one line and exits with status 2, without a
traceback. Anything else that escapes is an internal error and keeps its traceback. Raise it (or a subclass)
at the boundaries where user input is checked, naming the key, value, file and line.
"""

from __future__ import annotations


class UserError(ValueError):
    """Invalid user input (config, data, workdir, names); the CLI reports it in one line and exits 2."""


class UnknownNameError(UserError, KeyError):
    """A name that is not in a registry (also a ``KeyError`` for code that catches lookups)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class BadArgumentsError(UserError, TypeError):
    """Keyword arguments that a registered factory does not accept (also a ``TypeError``)."""


class WorkdirBusyError(UserError):
    """The workdir is locked by another live run."""


class MissingFileError(UserError, FileNotFoundError):
    """A file named by the user does not exist (also a ``FileNotFoundError``)."""


class FileFormatError(UserError):
    """A file named by the user cannot be read at all: empty, compressed, truncated, not the JSON layout
    expected, or damaged model weights. The message names the file (and the line, column or tensor where
    one is known)."""
