"""`memgpt perplexity DIR TEXTFILE`: the sliding-window perplexity of an exported model over a text file.

The text is tokenized whole, then read in windows of `context` tokens that start every `stride` tokens; each
window scores only the tokens the previous one did not (all but the first token of the text, once each), each
seeing up to `context - stride` tokens before it. This is the computation of the transformers documentation
("Perplexity of fixed-length models"); llama.cpp's `llama-perplexity` scores the second half of consecutive
windows of n_ctx tokens, which is stride = context / 2 with windows that do not overlap. Logits come from
`LanguageModel.logits` (scoring.py), one window per run. Loss is summed in float64.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import UsageError

DEFAULT_CONTEXT = 1024  # tokens per window (or the model's context, if shorter)


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    mean_nll: float  # nats per scored token
    tokens: int  # tokens scored: the text's tokens but the first
    windows: int
    context: int
    stride: int
    seconds: float


def windows(length: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over `length` tokens, as the transformers docs walk them."""
    out, previous_end = [], 0
    for begin in range(0, length, stride):
        end = min(begin + context, length)
        out.append((begin, end, max(begin + 1, previous_end)))  # the text's first token is never scored
        previous_end = end
        if end == length:
            break
    return out


def check_window(context: int, stride: int, model_context: int) -> None:
    if isinstance(context, bool) or not isinstance(context, int) or not 2 <= context <= model_context:
        raise UsageError(
            f"context must be a whole number in [2, {model_context}] (the model's context), got {context!r}"
        )
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= context:
        raise UsageError(f"stride must be a whole number in [1, context={context}], got {stride!r}")


def perplexity(lm, ids: list[int], context: int | None = None, stride: int | None = None, progress=None) -> Perplexity:
    """Sliding-window perplexity of `lm` over token ids; `progress(done, total)` after each window."""
    context = min(DEFAULT_CONTEXT, lm.manifest.context_length) if context is None else context
    stride = context // 2 if stride is None else stride
    check_window(context, stride, lm.manifest.context_length)
    if len(ids) < 2:
        raise UsageError(f"the text has {len(ids)} token(s); perplexity needs at least 2")
    start = time.perf_counter()
    plan = windows(len(ids), context, stride)
    total, scored = 0.0, 0
    for done, (begin, end, first) in enumerate(plan, 1):
        logits = lm.logits(ids[begin:end])[0]  # (window, vocab)
        targets = np.array(ids[first:end])
        total += float(token_nll(logits[first - 1 - begin : end - 1 - begin], targets).sum())  # t predicts t + 1
        scored += len(targets)
        if progress:
            progress(done, len(plan))
    mean = total / scored
    return Perplexity(float(np.exp(mean)), mean, scored, len(plan), context, stride, time.perf_counter() - start)


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(n,) float64 -log softmax(logits[i])[targets[i]] for (n, vocab) logits."""
    x = logits.astype(np.float64)
    top = x.max(axis=1)
    return top + np.log(np.exp(x - top[:, None]).sum(axis=1)) - x[np.arange(len(targets)), targets]


def read_text(path: str) -> str:
    """The text of a UTF-8 file; UsageError (one line) if it is missing, unreadable, not UTF-8 or empty."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"text file {path} does not exist; pass a UTF-8 text file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start}); convert it to UTF-8 first") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({exc.strerror}); check its permissions") from None
    if not text.strip():
        raise UsageError(f"{path} is empty; perplexity needs some text")
    return text


def register(subparsers) -> None:
    """Add `perplexity` to the `memgpt` command."""
    parser = subparsers.add_parser(
        "perplexity",
        help="sliding-window perplexity of an exported model over a text file",
        description="Perplexity of DIR over TEXTFILE: windows of --context tokens every --stride tokens, each "
        "scoring the tokens the previous window did not (as the transformers documentation computes it).",
    )
    parser.add_argument("model", metavar="DIR", help="a folder written by `memgpt export`")
    parser.add_argument("text", metavar="TEXTFILE", help="a UTF-8 text file")
    parser.add_argument(
        "--context", type=int, help=f"tokens per window (default: {DEFAULT_CONTEXT}, or the model's context if shorter)"
    )
    parser.add_argument("--stride", type=int, help="tokens between window starts (default: half the context)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: one per physical core)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .model import load

    text = read_text(args.text)  # before loading the model: a bad file fails fast
    lm = load(args.model, threads=args.threads)
    context = args.context if args.context is not None else min(DEFAULT_CONTEXT, lm.manifest.context_length)
    check_window(context, args.stride if args.stride is not None else max(1, context // 2), lm.manifest.context_length)
    ids = lm.tokenizer.encode(text)
    result = perplexity(lm, ids, context, args.stride, progress=_bar if sys.stderr.isatty() else None)
    if args.json:
        print(json.dumps({"model": str(args.model), "text": str(args.text), **asdict(result)}))
    else:
        print(
            f"perplexity {result.perplexity:.4f} over {result.tokens} tokens "
            f"(context {result.context}, stride {result.stride}, {result.windows} windows, {result.seconds:.1f} s)"
        )
    return 0


def _bar(done: int, total: int, width: int = 30) -> None:
    filled = width * done // total
    end = "\n" if done == total else ""
    print(
        f"\rperplexity [{'#' * filled}{'.' * (width - filled)}] {done}/{total} windows",
        end=end,
        file=sys.stderr,
        flush=True,
    )
