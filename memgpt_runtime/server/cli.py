"""The `memgpt serve` subcommand: argument parsing and running uvicorn, nothing else.

`memgpt` finds `register` through the `memgpt.commands` entry point; this module imports nothing heavy, so
FastAPI and uvicorn load only when the server runs (`pip install 'memgpt-runtime[serve]'`). SIGTERM (or Ctrl-C)
stops accepting connections, lets running requests finish for at most `--drain-timeout` seconds, cancels the
rest, closes the engine and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from ..errors import MemgptError, UsageError

SWITCH_INTERVAL = float(os.environ.get("MEMGPT_SERVE_SWITCH_INTERVAL", "0.001"))  # seconds; Python's default is 0.005


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import thread_count

    parser = subparsers.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve DIR (a folder written by `memgpt export`) over HTTP: /v1/chat/completions, /v1/completions, "
        "/v1/models, /tokenize, /detokenize, /health, /metrics, with continuous batching of concurrent requests.",
    )
    parser.add_argument("model", metavar="DIR", help="a folder written by `memgpt export`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000; 0 = any free port)")
    parser.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="KEY",
        help="accept this key (repeatable); default: $MEMGPT_API_KEY, or no key needed",
    )
    parser.add_argument("--model-name", help="the model's name in the API (default: the folder's name)")
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=16,
        metavar="R",
        help="KV slots: rows decoded together (a request takes n or beam-width rows; default 16)",
    )
    parser.add_argument(
        "--max-queue",
        type=positive_int,
        default=64,
        metavar="Q",
        help="requests waiting for slots before new ones get 503 (default 64)",
    )
    parser.add_argument("--threads", type=thread_count, help=f"onnxruntime threads, 1 to {os.cpu_count()}")
    parser.add_argument(
        "--batch-invariant",
        action="store_true",
        help="answers bit-identical whatever else runs beside them; int4 pays for it on lone requests (docs/engine.md)",
    )
    parser.add_argument(
        "--max-body-bytes", type=positive_int, default=1 << 20, help="largest request body (default 1 MiB)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long running requests may take to finish (default 30)",
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    ray = parser.add_argument_group("Ray Serve (pip install 'memgpt-runtime[ray]')")
    ray.add_argument("--ray-replicas", type=positive_int, metavar="N", help="serve with N replicas on Ray Serve")
    ray.add_argument(
        "--ray",
        default="local",
        metavar="local|ADDRESS",
        help="the Ray cluster: 'local' starts one on this machine (default), an address joins one",
    )
    ray.add_argument(
        "--max-ongoing-requests",
        type=positive_int,
        metavar="R",
        help="requests Serve sends one replica at once (default: --max-batch + --max-queue + 8, so that a full "
        "replica refuses with the server's own 503)",
    )
    ray.add_argument(
        "--max-queued-requests",
        type=positive_int,
        metavar="Q",
        help="requests waiting in Serve's router before Serve answers its own 503 (default: 4 x replicas x "
        "--max-ongoing-requests)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .app import ServerState, create_app
    except ImportError as exc:
        raise UsageError(f"`memgpt serve` needs the serve extra ({exc}); pip install 'memgpt-runtime[serve]'") from None
    from ..manifest import read_manifest

    folder = Path(args.model)
    read_manifest(folder)  # a missing or stale folder fails now, in one line, before the port opens
    keys = args.api_key if args.api_key else [k for k in [os.environ.get("MEMGPT_API_KEY")] if k]
    if args.ray_replicas:
        return _run_on_ray(args, folder, keys)
    state = ServerState(
        folder,
        args.model_name or folder.resolve().name,
        keys,
        args.max_batch,
        args.max_queue,
        args.threads,
        args.max_body_bytes,
        args.batch_invariant,
    )
    config = uvicorn.Config(
        create_app(state),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=args.drain_timeout,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # the engine thread needs the GIL back after each model call while the event loop may be busy writing streams:
    # a shorter switch interval (default 5 ms) bounds that wait on the engine's critical path
    sys.setswitchinterval(SWITCH_INTERVAL)
    state.on_load_failure = lambda: setattr(server, "should_exit", True)
    # subtle: uvicorn re-raises the signal that stopped it once it has shut down; a no-op handler makes a drained
    # SIGTERM exit 0 instead of running `memgpt`'s own handler (exit 143)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if state.load_error is not None:
        error = state.load_error
        raise error if isinstance(error, MemgptError) else MemgptError(f"the model failed to load: {error}")
    return 0


def _run_on_ray(args: argparse.Namespace, folder: Path, keys: list[str]) -> int:
    from .ray_serve import serve_forever

    threads = args.threads or 1
    settings = {
        "folder": str(folder.resolve()),
        "model_name": args.model_name or folder.resolve().name,
        "api_keys": keys,
        "max_batch": args.max_batch,
        "max_queue": args.max_queue,
        "threads": threads,
        "max_body_bytes": args.max_body_bytes,
        "batch_invariant": args.batch_invariant,
    }
    return serve_forever(
        settings,
        args.ray,
        args.host,
        args.port,
        args.ray_replicas,
        args.max_ongoing_requests,
        args.max_queued_requests,
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return value
