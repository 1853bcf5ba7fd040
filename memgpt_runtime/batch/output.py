"""The output of a batch job: whole lines appended to OUTPUT.partial, renamed to OUTPUT when the job completes.

Each write is one `os.write` of whole lines on a file opened for appending, so what reaches the file is never half
a line from this process's buffers; `--resume` reads the partial file back, drops a torn last line (a crash of the
machine mid-write), and skips the rows already there. A row whose key was written already is not written again, so
a retried batch (Ray) never duplicates an id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError
from .rows import row_key


class PartialOutput:
    def __init__(self, path: Path, resume: bool = False):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.done: set[str] = set()  # keys of the rows in the partial file
        self.written = 0  # rows written by this run
        if self.partial.exists():
            if not resume:
                raise UsageError(f"{self.partial} holds an interrupted job: pass --resume to continue it, or delete it")
            self._recover()
        elif resume and self.path.exists():
            raise UsageError(f"{self.path} is complete already; nothing to resume")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _recover(self) -> None:
        """Read the keys of every whole row; cut the file after the last one (a torn line cannot be trusted)."""
        good = 0
        with open(self.partial, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    self.done.add(row_key(json.loads(line)))
                except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                    break
                good += len(line)
        os.truncate(self.partial, good)

    def write(self, rows: list[dict]) -> list[dict]:
        """Append the rows of `rows` not written yet, in one write; returns them."""
        new, data = [], []
        for row in rows:
            key = row_key(row)
            if key in self.done:
                continue
            self.done.add(key)
            new.append(row)
            data.append(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        buffer = memoryview(b"".join(data))
        while buffer:
            buffer = buffer[os.write(self._fd, buffer) :]
        self.written += len(new)
        return new

    def finish(self) -> None:
        """The job is complete: the partial file becomes OUTPUT."""
        os.fsync(self._fd)
        self.close()
        os.replace(self.partial, self.path)

    def close(self) -> None:
        """Stop without finishing: the partial file stays for --resume."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
