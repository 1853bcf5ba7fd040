"""The batch job on Ray Data: rows → `map_batches` over a fixed pool of replica actors → the partial output.

Each replica (`Replica`) loads the model once, with its own onnxruntime threads, and runs each batch of rows on its
engine with `RowRunner`, as the local job does. The driver keeps writing: results stream back from Ray Data and are
appended to the partial file as they come. Ray Data restarts a replica that dies and runs its batches again
(an actor pool's defaults: `max_restarts=-1`, `max_task_retries=-1`); the partial output drops a row it holds
already, so a retried batch never writes an id twice. Only this module and `ray_cluster.py` import ray.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..ray_cluster import connect
from .output import PartialOutput
from .rows import Row


class Replica:
    """One model and engine in a Ray actor; called with batches of rows (a `row` column of JSON strings)."""

    def __init__(self, folder: str, threads: int, slots: int, window: int):
        from ..engine import Engine
        from ..model import load
        from .runner import RowRunner

        lm = load(folder, threads=threads)
        self.window = window
        self.engine = Engine(lm, slots=slots, max_queue=window)
        self.runner = RowRunner(lm, self.engine, slots)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [Row.from_json(text) for text in batch["row"]]

        async def run():
            return [out async for out in self.runner.run_all(rows, self.window)]

        outs = asyncio.run(run())
        return {"out": np.array([json.dumps(o, ensure_ascii=False) for o in outs], dtype=object)}


def run_on_ray(
    folder: Path,
    rows: Iterable[Row],
    output: PartialOutput,
    address: str,
    replicas: int,
    threads: int,
    batch_size: int,
    slots: int,
    on_row=None,
) -> None:
    """Run `rows` (usable ones; malformed lines are written by the caller) on `replicas` actors of `threads` CPUs."""
    import ray

    started = connect(address, replicas, threads)
    try:
        _run(folder, rows, output, replicas, threads, batch_size, slots, on_row)
    finally:
        if started:
            ray.shutdown()


def _run(folder, rows, output, replicas, threads, batch_size, slots, on_row) -> None:
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()  # Ray Data's bars, on a terminal
    items = [{"row": row.to_json()} for row in rows]
    if not items:
        return
    # subtle: the folder must be at the same path on every node of a real cluster (a shared file system)
    ds = ray.data.from_items(items).map_batches(
        Replica,
        fn_constructor_kwargs={
            "folder": str(Path(folder).resolve()),
            "threads": threads,
            "slots": slots,
            "window": max(batch_size, 2 * slots),
        },
        compute=ray.data.ActorPoolStrategy(size=replicas),
        num_cpus=threads,
        batch_size=batch_size,
        batch_format="numpy",
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for out in output.write([json.loads(text) for text in batch["out"]]):
            if on_row is not None:
                on_row(out)
