"""`BenchError`: the suite cannot run as asked. One of the project's errors (memgpt_runtime.errors), so
`memgpt bench` prints it as one line and exits with its code, as every other subcommand does.

Imported only once the suite runs: it imports memgpt_runtime, which registering `memgpt bench` and the PyTorch
workers must not load.
"""

from __future__ import annotations

from memgpt_runtime.errors import MemgptError


class BenchError(MemgptError):
    """A bad option (exit code 2), or a model that every engine needs and that cannot be built (exit code 1)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
