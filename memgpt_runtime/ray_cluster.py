"""Joining a Ray cluster, or starting one on this machine, for `memgpt batch --ray` and `memgpt serve --ray-replicas`.

Imported only by those two paths; `import memgpt_runtime` never imports ray.
"""

from __future__ import annotations

import os

from .errors import UsageError


def connect(address: str, replicas: int, threads: int) -> str | None:
    """Join the cluster at `address` (host:port, or `auto`), or start one sized to this machine (`local`); refuse
    replicas that cannot all fit. Returns "local" when this call started a cluster, "joined" when it joined one (the
    caller then calls `ray.shutdown()`), None when this process was connected already."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError(f"Ray is not installed ({exc}); pip install 'memgpt-runtime[ray]'") from None
    started = None
    if not ray.is_initialized():
        started = "local" if address == "local" else "joined"
        if address == "local":
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, ValueError) as exc:
                raise UsageError(
                    f"cannot join the Ray cluster at {address!r} ({exc}); start one with `ray start --head`, "
                    "or pass --ray local"
                ) from None
    cpus = ray.cluster_resources().get("CPU", 0)
    if replicas * threads > cpus:
        raise UsageError(
            f"{replicas} replicas x {threads} threads need {replicas * threads} CPUs but the Ray cluster "
            f"has {cpus:g}; lower the replicas or their threads"
        )
    return started
