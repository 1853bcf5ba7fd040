"""Progress lines for the long export steps: one line on stderr when a step starts and one when it ends.

Only timing and names; the steps themselves live in the pipeline. Pass `quiet=True` to silence it (tests).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Prints `memgpt export: <step> ...` then `memgpt export: <step> done (1.2s, cpu 2.1s, total 3.4s)` on stderr:
    wall time, the process's CPU time (user + system, every thread: what the step cost on a shared machine)."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream
        self.start = time.perf_counter()

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"memgpt export: {message}", file=self.stream or sys.stderr, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        began, cpu = time.perf_counter(), time.process_time()
        self.say(f"{name} ...")
        yield
        now = time.perf_counter()
        self.say(
            f"{name} done ({now - began:.1f}s, cpu {time.process_time() - cpu:.1f}s, total {now - self.start:.1f}s)"
        )
