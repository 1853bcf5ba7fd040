"""A fake engine adapter for the benchmark suite's tests (`"adapter": "tests.fake_engine"` in a worker spec).

It generates token 7 over and over, a little slowly, and appends "NAME BEAMS" to the file spec["calls"] at every
`generate`, so a test can read the order in which the engines took their turns. spec["broken"] == "beam" makes beam
search raise; spec["beam_search"] False makes it an engine without beam search; spec["broken"] == "load" makes the
load raise.
"""

from __future__ import annotations

import time


def import_modules() -> None:
    pass


def load(spec: dict) -> FakeEngine:
    if spec.get("broken") == "load":
        raise RuntimeError("this fake engine does not load")
    return FakeEngine(spec)


class FakeEngine:
    batching = True

    def __init__(self, spec: dict):
        self.name, self.calls, self.broken = spec["name"], spec["calls"], spec.get("broken")
        self.beam_search = spec.get("beam_search", True)

    def generate(self, rows, new_tokens: int, beams: int = 1, on_token=None) -> list[list[int]]:
        with open(self.calls, "a") as f:
            f.write(f"{self.name} {beams}\n")
        if beams > 1 and self.broken == "beam":
            raise RuntimeError("beam search is broken here")
        for _ in range(new_tokens):
            time.sleep(0.001)
            if on_token:
                on_token()
        return [[7] * new_tokens for _ in rows]
