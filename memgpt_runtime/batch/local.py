"""The batch job on this machine: rows read as they go, run on one engine (continuous batching), each result
appended to the partial output as it finishes, with a progress line on a terminal.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .output import PartialOutput
from .rows import Row


@dataclass
class Tally:
    """What a job did: rows written, error rows (malformed lines apart), tokens, time."""

    rows: int = 0
    malformed: int = 0  # lines that are no usable row (not JSON, no id, a repeated id)
    errors: int = 0  # rows whose request was refused or failed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, out: dict) -> None:
        self.rows += 1
        if "error" in out:
            if "line" in out:
                self.malformed += 1
            else:
                self.errors += 1
        else:
            self.prompt_tokens += out["prompt_tokens"]
            self.completion_tokens += out["completion_tokens"]

    def line(self) -> str:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        return (
            f"{self.rows} rows in {seconds:.1f} s ({self.rows / seconds:.2f} rows/s, "
            f"{self.completion_tokens / seconds:.1f} tokens/s); {self.malformed} malformed lines, "
            f"{self.errors} rows with errors"
        )


class Progress:
    """A progress line rewritten in place on a terminal; silent otherwise."""

    def __init__(self, total: int | None, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.on = stream.isatty()
        self._last = 0.0

    def update(self, tally: Tally, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.on or (not force and now - self._last < 0.2):
            return
        self._last = now
        total = f"/{self.total}" if self.total is not None else ""
        self.stream.write(f"\r{tally.rows}{total} {tally.line().split(' in ', 1)[1]}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.on:
            self.stream.write("\n")


def run_local(
    folder: Path,
    rows: Iterable[Row],
    output: PartialOutput,
    threads: int | None,
    slots: int,
    total: int | None = None,
    on_row=None,
) -> Tally:
    from ..engine import Engine
    from ..model import load
    from .runner import RowRunner

    lm = load(folder, threads=threads)
    window = 2 * slots  # enough waiting rows that a finished one is replaced before the next step
    tally, progress = Tally(), Progress(total)
    with Engine(lm, slots=slots, max_queue=window) as engine:
        runner = RowRunner(lm, engine, slots)

        async def job():
            async for out in runner.run_all(rows, window):
                for new in output.write([out]):
                    tally.add(new)
                    if on_row is not None:
                        on_row(new)
                progress.update(tally)

        try:
            asyncio.run(job())
        finally:
            progress.update(tally, force=True)
            progress.close()
    return tally
