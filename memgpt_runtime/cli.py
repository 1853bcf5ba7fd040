"""The `memgpt` command: `generate` and `chat` here, other subcommands (export, bench) from plugins.

Plugins register through the entry-point group `memgpt.commands`, so the runtime never imports the export
stage. Every MemgptError becomes one line on stderr and a non-zero exit code; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from . import __version__
from .errors import MemgptError, ModelFolderError, UsageError
from .perplexity import register as register_perplexity
from .session import check_threads

EARLY_STOPPING = {"true": True, "false": False, "never": "never"}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line and exits with 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    """A flag for every field of GenerationConfig; unset flags fall back to the model's defaults."""
    g = parser.add_argument_group("generation options (default: the model's generation config)")
    g.add_argument("--max-new-tokens", type=int, help="new tokens to generate (default 128 for text)")
    g.add_argument("--max-length", type=int, help="stop at this many tokens, prompt included")
    g.add_argument("--min-new-tokens", type=int, help="ban EOS until this many new tokens")
    g.add_argument("--min-length", type=int, help="ban EOS until the sequence is this long")
    g.add_argument("--do-sample", action="store_const", const=True, help="sample instead of greedy/beam search")
    g.add_argument("--temperature", type=float, help="sampling temperature, > 0")
    g.add_argument("--top-k", type=int, help="sample from the k most likely tokens; 0 = off")
    g.add_argument("--top-p", type=float, help="sample from the smallest set with this much probability, (0, 1]")
    g.add_argument("--seed", type=int, help="random seed for sampling")
    g.add_argument("--num-beams", type=int, help="beam search width; 1 = no beam search")
    g.add_argument("--length-penalty", type=float, help="beam score divisor exponent of the length")
    g.add_argument("--early-stopping", choices=sorted(EARLY_STOPPING), help="beam search stopping rule")
    g.add_argument("--num-return-sequences", type=int, help="sequences to return per prompt")
    g.add_argument("--no-repeat-ngram-size", type=int, help="ban repeating n-grams of this size; 0 = off")
    g.add_argument("--repetition-penalty", type=float, help="penalty for tokens already present; 1 = off")
    g.add_argument("--eos-token-id", type=int, action="append", help="token id that ends generation (repeatable)")
    g.add_argument("--pad-token-id", type=int, help="token id that pads finished sequences")
    g.add_argument("--forced-bos-token-id", type=int, help="force the first new token to this id")
    g.add_argument(
        "--forced-eos-token-id", type=int, action="append", help="force this id last, at max length (repeatable)"
    )
    g.add_argument(
        "--bad-words-ids", type=_token_lists, help="token sequences never to generate, as JSON: '[[5], [7, 8]]'"
    )
    g.add_argument("--decoder-start-token-id", type=int, help="encoder-decoder models: the decoder's first token")
    g.add_argument(
        "--renormalize-logits", action="store_const", const=True, help="log-softmax the scores after the processors"
    )
    g.add_argument(
        "--prompt-lookup-num-tokens",
        type=int,
        metavar="K",
        help="draft K tokens from the prompt and check them in one run (greedy or sampling, one prompt)",
    )
    g.add_argument(
        "--max-matching-ngram-size", type=int, metavar="N", help="prompt lookup: the longest n-gram matched (default 2)"
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        help=f"onnxruntime threads, 1 to {os.cpu_count()} (default: one per physical core)",
    )


def thread_count(text: str) -> int:
    """argparse type of --threads: a whole number from 1 to this machine's CPU count."""
    try:
        return check_threads(int(text), "--threads")
    except (ValueError, UsageError):
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 1 to {os.cpu_count()} (this machine's CPUs), got {text!r}"
        ) from None


def _token_lists(text: str) -> list[list[int]]:
    """argparse type of --bad-words-ids: a JSON list of lists of token ids."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not (
        isinstance(value, list)
        and value
        and all(isinstance(w, list) and w and all(isinstance(t, int) for t in w) for w in value)
    ):
        raise argparse.ArgumentTypeError(
            f"expected a JSON list of lists of token ids like '[[5], [7, 8]]', got {text!r}"
        )
    return value


def generation_options(args: argparse.Namespace) -> dict:
    names = [
        "max_new_tokens",
        "max_length",
        "min_new_tokens",
        "min_length",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "seed",
        "num_beams",
        "length_penalty",
        "num_return_sequences",
        "no_repeat_ngram_size",
        "repetition_penalty",
        "eos_token_id",
        "pad_token_id",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "bad_words_ids",
        "decoder_start_token_id",
        "renormalize_logits",
        "prompt_lookup_num_tokens",
        "max_matching_ngram_size",
    ]
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.early_stopping is not None:
        options["early_stopping"] = EARLY_STOPPING[args.early_stopping]
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="memgpt", description="Fast CPU inference for Hugging Face language models.")
    parser.add_argument("--version", action="version", version=f"memgpt-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    gen = sub.add_parser("generate", help="generate text from a prompt", description="Generate text from a prompt.")
    gen.add_argument("model", metavar="DIR", help="a folder written by `memgpt export`")
    gen.add_argument("prompt", nargs="?", default="-", help="the prompt; - or nothing reads standard input")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    gen.add_argument("--stream", action="store_true", help="print text as it is generated")
    gen.add_argument("--json", action="store_true", help="print one JSON object with texts, ids, scores, timing")
    gen.add_argument("--quiet", action="store_true", help="do not print the timing line on stderr")
    add_generation_options(gen)
    gen.set_defaults(func=run_generate)

    chat = sub.add_parser("chat", help="talk with a model", description="An interactive multi-turn chat.")
    chat.add_argument("model", metavar="DIR", help="a folder written by `memgpt export`")
    chat.add_argument("--system", help="a system message that opens the conversation")
    add_generation_options(chat)
    chat.set_defaults(func=run_chat)

    verify = sub.add_parser(
        "verify",
        help="check every file of an exported folder against its manifest",
        description="Check the size and SHA-256 of every file of DIR against what the export recorded.",
    )
    verify.add_argument("model", metavar="DIR", help="a folder written by `memgpt export`")
    verify.set_defaults(func=run_verify)

    register_perplexity(sub)

    for plugin in entry_points(group="memgpt.commands"):
        try:
            register = plugin.load()
        except ImportError as exc:
            _register_missing(sub, plugin.name, exc)
            continue
        register(sub)
    return parser


def _register_missing(sub, name: str, exc: ImportError) -> None:
    def fail(args):
        raise UsageError(
            f"`memgpt {name}` is not available ({exc}); install it with pip install 'memgpt-runtime[{name}]'"
        )

    sub.add_parser(name, help=f"(not installed) {name}", add_help=False).set_defaults(func=fail)


def run_generate(args: argparse.Namespace) -> int:
    from .model import load

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    options = generation_options(args)
    lm = load(args.model, threads=args.threads)
    options = with_length_default(options, lm, 128)
    ids = lm.encode_prompt(prompt, chat=args.chat)
    start = time.perf_counter()
    if args.stream and not args.json:
        result = _write_stream(lm.generate_text(prompt, chat=args.chat, stream=True, **options))
        sys.stdout.write("\n")
        _report_timing(args, len(ids), int(result.lengths.max()), time.perf_counter() - start)
        return 0
    result = lm.generate([ids], return_dict_in_generate=True, **options)
    seconds = time.perf_counter() - start
    new = lm.new_tokens(result.sequences, len(ids))
    texts = lm.tokenizer.batch_decode(new, skip_special_tokens=True)
    if args.json:
        outputs = []
        for i, (text, row) in enumerate(zip(texts, new)):
            item = {"text": text, "token_ids": [int(t) for t in row[: result.lengths[i]]]}
            if result.sequences_scores is not None:
                item["score"] = float(result.sequences_scores[i])
            outputs.append(item)
        body = {"prompt_tokens": len(ids), "outputs": outputs, "seconds": round(seconds, 4)}
        print(json.dumps(body, ensure_ascii=False))
        return 0
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(
                f"--- {i + 1}"
                + (f" (score {result.sequences_scores[i]:.4f})" if result.sequences_scores is not None else "")
            )
        print(text)
    _report_timing(args, len(ids), int(result.lengths.max()), seconds)
    return 0


def _write_stream(pieces):
    """Print the pieces of `generate_text(stream=True)` as they come; its GenerateResult (the return value) out."""
    while True:
        try:
            piece = next(pieces)
        except StopIteration as end:
            return end.value
        sys.stdout.write(piece)
        sys.stdout.flush()


def with_length_default(options: dict, lm, max_new_tokens: int) -> dict:
    """`options` with the text commands' `default_new_tokens`: the new tokens when neither the user nor the model
    sets a length. `request.resolve_length` applies it (and stops it at the context); `lm` is unused."""
    return {"default_new_tokens": max_new_tokens, **options}


def _report_timing(args, prompt_tokens: int, new_tokens: int | None, seconds: float) -> None:
    if args.quiet:
        return
    rate = f", {new_tokens / seconds:.1f} tokens/s" if new_tokens else ""
    new = f"{new_tokens} new tokens" if new_tokens is not None else "generated"
    print(f"[{prompt_tokens} prompt tokens, {new} in {seconds:.2f} s{rate}]", file=sys.stderr)


def run_chat(args: argparse.Namespace) -> int:
    from .chat import chat_loop
    from .model import load

    lm = load(args.model, threads=args.threads)
    return chat_loop(lm, with_length_default(generation_options(args), lm, 256), system=args.system)


def run_verify(args: argparse.Namespace) -> int:
    """One line per damaged, missing or unexpected file on stdout; exit 1 if there is any."""
    from .integrity import content_problems
    from .manifest import read_manifest

    folder = Path(args.model)
    manifest = read_manifest(folder, check_files=False)
    if not manifest.files:
        raise ModelFolderError(
            f"{folder} records no checksums (manifest version {manifest.version}); re-export it to verify it"
        )
    problems = content_problems(folder, manifest.files)
    for line in problems:
        print(f"{folder}: {line}")
    if problems:
        return 1
    print(f"{folder}: {len(manifest.files)} files OK")
    return 0


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse with options and positionals in any order (`generate DIR --chat "prompt"` and the like)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv and argv[0] in sub.choices:
        args = sub.choices[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="replace")  # undecodable input bytes become U+FFFD, as in most tools
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except MemgptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return _stopped(130, argv)
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return _stopped(143, argv)
    except BrokenPipeError:
        # the reader left (`| head`): stop quietly, as Unix tools do, and keep Python's exit flush from failing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM (`kill`, `timeout`, `docker stop`) as an exception, so cleanup runs as it does for Ctrl-C.

    Not a KeyboardInterrupt: the chat loop reads Ctrl-C as "stop this reply", never as "stop the program".
    """


def _terminate(signum, frame):
    raise Terminated


def _stopped(code: int, argv: list[str] | None) -> int:
    """The exit code of a run stopped by Ctrl-C or SIGTERM, its cleanup done. As the program (no `argv`) with torch
    imported (an export), leave at once, without Python's teardown: the signal can land while torch is being
    imported, and tearing down its half-made state crashed the interpreter (SIGSEGV, exit -11 for 143; once in CI,
    tests/test_export_reliability.py). Other runs keep the teardown (atexit handlers: Ray's shutdown, for one)."""
    if argv is not None or "torch" not in sys.modules:
        return code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone or a stream closed: nothing left to deliver
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
