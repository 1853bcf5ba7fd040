"""What the two served benchmarks (served.py in process, served_http.py over HTTP) share: client threads run
while a process's memory is sampled, and the percentiles of their figures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np


def run_clients(client: Callable[[int], None], clients: int, process, every: float = 5.0) -> list[float]:
    """Run `client(k)` for k in range(clients), each in its own thread, sampling `process` (a psutil.Process) every
    `every` seconds until all have returned; its resident memory at each sample, in MB."""
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    rss = []
    while any(t.is_alive() for t in threads):
        rss.append(process.memory_info().rss)
        time.sleep(every)
    for t in threads:
        t.join()
    return [round(r / 2**20, 1) for r in rss]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile of `values`; NaN when there are none."""
    return float(np.percentile(values, q)) if values else float("nan")
