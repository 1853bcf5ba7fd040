"""The error hierarchy of memgpt-runtime: every failure a user can cause, each saying what to do.

The CLI prints `str(error)` on one line and exits with `error.exit_code`; no traceback reaches the user.
"""


class MemgptError(Exception):
    """Base of every error memgpt-runtime raises on purpose."""

    exit_code = 1


class UsageError(MemgptError):
    """Bad arguments: an invalid option, a combination that makes no sense, an empty prompt."""

    exit_code = 2


class ModelFolderError(MemgptError):
    """The exported folder is missing, incomplete, stale or corrupt."""


class PromptTooLongError(UsageError):
    """The prompt plus the tokens asked for do not fit the model's context."""


class ExportError(MemgptError):
    """The export stage could not turn the given model into a runtime folder."""


def first_line(exc: BaseException, empty: str | None = None) -> str:
    """The first line of `str(exc)`, for a one-line error that wraps it; `empty` (default: the exception's type
    name) when it says nothing."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else (type(exc).__name__ if empty is None else empty)
