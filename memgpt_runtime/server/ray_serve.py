"""The HTTP server's application on Ray Serve: N replicas, each a model, an engine and the same FastAPI app.

Each replica loads its model in its constructor (Serve routes to it only once it is up) and serves `create_app`'s
routes, API keys and errors unchanged, its engine's queue included: a full replica answers the single-process
server's 503 (OpenAI's JSON, Retry-After). Only `memgpt serve --ray-replicas` imports this module (and ray).
"""

from __future__ import annotations

import signal
import threading

from ..errors import MemgptError
from ..ray_cluster import connect

APP_NAME = "memgpt"


class MemgptReplica:
    """One replica: the server's state, loaded before the replica takes requests."""

    def __init__(self, settings: dict):
        from .app import ServerState

        self.state = ServerState(**settings)
        self.state.load()
        if self.state.load_error is not None:
            raise self.state.load_error

    def __serve_build_asgi_app__(self):
        from .app import create_app

        return create_app(self.state)

    def check_health(self) -> None:
        """Serve replaces a replica whose engine has stopped (a failure of the model)."""
        if self.state.engine is None or self.state.engine._closed:
            raise RuntimeError("the engine has stopped")


# requests a replica may hold beyond what its engine takes (running and waiting): its refusals in flight and the
# requests that never reach the engine (/health, /metrics, /v1/models, errors of the request itself)
HEADROOM = 8
# Serve's router counts every request as queued until it is assigned to a replica, a burst included: its queue
# holds this many times what the replicas hold before Serve refuses on its own
FLOOD = 4


def application(settings: dict, replicas: int, max_ongoing: int | None = None, max_queued: int | None = None):
    """The Serve application: `replicas` copies of the server, `settings["threads"]` CPUs each. By default a full
    engine refuses in OpenAI's shape and Serve's own (plain) 503 is left for floods (docs/batch.md)."""
    from ray import serve
    from ray.serve.config import BackpressureConfig

    max_ongoing = max_ongoing or settings["max_batch"] + settings["max_queue"] + HEADROOM
    deployment = serve.deployment(
        serve.ingress()(MemgptReplica),
        name="MemgptServer",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": settings["threads"]},
        max_ongoing_requests=max_ongoing,
        max_queued_requests=max_queued or FLOOD * replicas * max_ongoing,
        backpressure_config=BackpressureConfig(retry_after_s=1),
    )
    return deployment.bind(settings)


def serve_forever(
    settings: dict,
    address: str,
    host: str,
    port: int,
    replicas: int,
    max_ongoing: int | None = None,
    max_queued: int | None = None,
) -> int:
    """Run the application until SIGTERM or Ctrl-C; then remove it (and stop the cluster if this call started it)."""
    from ray import serve

    started = connect(address, replicas, settings["threads"])
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(application(settings, replicas, max_ongoing, max_queued), name=APP_NAME, route_prefix="/")
        except RuntimeError as exc:
            raise MemgptError(f"the Serve application failed to start: {exc}") from None
        print(
            f"serving {settings['model_name']!r} on http://{host}:{port} with {replicas} Ray Serve replicas", flush=True
        )
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if started == "local":
            serve.shutdown()
        else:  # a cluster shared with others: only this application leaves
            serve.delete(APP_NAME)
        if started is not None:
            import ray

            ray.shutdown()
    return 0
