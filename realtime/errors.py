"""User-facing errors: each carries a one-line message and the process exit code."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input or environment, reported as one line without a traceback."""

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BadInputError(UserError):
    """A path, URL or device that cannot be opened or read (exit code 2)."""

    exit_code = 2


class OutputError(UserError):
    """An output location that cannot be written (exit code 3)."""

    exit_code = 3


class MissingResourceError(UserError):
    """A model, engine or data file that is not installed (exit code 4)."""

    exit_code = 4
