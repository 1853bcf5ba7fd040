"""The `memgpt batch` subcommand: argument parsing, the output file's life (partial, resume, rename), and the
choice of the local job or the Ray pipeline; `memgpt` finds `register` through the `memgpt.commands` entry point.

Ray is imported only when `--ray` is given (`pip install 'memgpt-runtime[ray]'`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..cli import thread_count
    from ..server.cli import positive_int

    parser = subparsers.add_parser(
        "batch",
        help="answer every prompt of a JSONL file, on this machine or on a Ray cluster",
        description='Answer every row of INPUT (JSONL: {"id": ..., "prompt": "..."} or {"id": ..., "messages": [...]}, '
        "with the server's generation options) into OUTPUT (JSONL: id, text, finish_reason, prompt_tokens, "
        "completion_tokens). Results go to OUTPUT.partial as they finish; OUTPUT appears when every row is done.",
    )
    parser.add_argument("model", metavar="DIR", help="a folder written by `memgpt export`")
    parser.add_argument("input", metavar="INPUT.jsonl", help="one request per line")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT.jsonl", help="where the results go")
    parser.add_argument(
        "--ray",
        metavar="local|ADDRESS",
        help="run on Ray: 'local' starts a cluster on this machine, an address (host:port) joins one",
    )
    parser.add_argument("--replicas", type=positive_int, default=1, metavar="N", help="Ray: model replicas (default 1)")
    parser.add_argument(
        "--threads-per-replica",
        type=thread_count,
        metavar="K",
        help="onnxruntime threads of each replica (the local engine: default one per core; Ray: default 1)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        metavar="B",
        help="Ray: rows per batch sent to a replica (default 32)",
    )
    parser.add_argument(
        "--slots",
        type=positive_int,
        default=16,
        metavar="S",
        help="KV slots of each engine: rows decoded together (default 16)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted job from OUTPUT.partial, skipping the ids there"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from .local import Tally, run_local
        from .output import PartialOutput
        from .rows import malformed_row, read_rows
    except ImportError as exc:
        raise UsageError(f"`memgpt batch` needs the serve extra ({exc}); pip install 'memgpt-runtime[serve]'") from None
    from ..manifest import read_manifest

    folder, source = Path(args.model), Path(args.input)
    read_manifest(folder)
    if not source.is_file():
        raise UsageError(f"{source} is not a file; give a JSONL file of requests")
    if args.ray is None and args.replicas != 1:
        raise UsageError("--replicas needs --ray (local or a cluster's address)")
    output = PartialOutput(Path(args.output), resume=args.resume)
    total = sum(1 for row in read_rows(source))
    todo = (row for row in read_rows(source) if row.key not in output.done)
    skipped = len(output.done)
    try:
        if args.ray is None:
            tally = run_local(folder, todo, output, args.threads_per_replica, args.slots, total=total - skipped)
        else:
            try:
                from .ray_data import run_on_ray
            except ImportError as exc:
                raise UsageError(f"--ray needs the ray extra ({exc}); pip install 'memgpt-runtime[ray]'") from None
            tally, usable = Tally(), []
            for row in todo:
                if row.error is not None:  # written here: a replica has nothing to do with it
                    for new in output.write([malformed_row(row)]):
                        tally.add(new)
                else:
                    usable.append(row)
            run_on_ray(
                folder,
                usable,
                output,
                args.ray,
                args.replicas,
                args.threads_per_replica or 1,
                args.batch_size,
                args.slots,
                on_row=tally.add,
            )
    except BaseException:
        output.close()
        if output.done:
            print(
                f"note: {output.partial} holds {len(output.done)} finished rows: run again with --resume",
                file=sys.stderr,
            )
        raise
    output.finish()
    resumed = f" ({skipped} rows were done already)" if skipped else ""
    print(f"{output.path}: {tally.line()}{resumed}", file=sys.stderr)
    return 0
