"""The grounded workload of prompt-lookup decoding (issue #19): memgpt int8/int4 with and without
`prompt_lookup_num_tokens`, next to transformers on PyTorch (fp32 from the GGUF) with and without it.

Prompts, all greedy through the chat template, stopping at EOS or `--new-tokens`:
- copy-heavy: repeat a ~400-token passage, correct the typos of it, rename a function in ~40 lines of code;
- extract: summarize the passage, answer a question by quoting it;
- chat: the suite's ordinary chat prompts (benchmarks/prompts.py), where lookup finds little to draft.
Each configuration runs every prompt once per round, the configurations taking turns in an order that reverses
every round (interleave.order), after one short untimed warmup run each; figures are medians over the rounds.
Timed: decode tokens/s, (n - 1) / (time of the last token - time of the first), so prefill is not in it;
tokens per model call after the prefill, and for memgpt the share of drafted tokens the model kept. Not timed:
tokenization, model load. The answers of each engine with and without lookup are compared token by token.

    python -m benchmarks.lookup --int4 /tmp/srv/smollm2-int4 --int8 /tmp/srv/smollm2-int8 --out lookup.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from . import interleave, models, prompts

PASSAGE_PARAGRAPHS = 3  # the first paragraphs of data/english.txt: about 400 tokens
TYPOS = [
    ("sharply", "sharpley"),
    ("history", "histroy"),
    ("travellers", "travelers"),
    ("important", "importent"),
    ("council", "councel"),
    ("mechanism", "mechansim"),
    ("curiosity", "curiousity"),
    ("position", "postion"),
]
CODE = '''def parse_line(line, separator=","):
    """Split one line of a ledger into its date, account, amount and note."""
    fields = [field.strip() for field in line.split(separator)]
    if len(fields) < 3:
        raise ValueError(f"expected at least 3 fields, got {len(fields)}: {line!r}")
    date, account, amount = fields[:3]
    note = fields[3] if len(fields) > 3 else ""
    return {"date": date, "account": account, "amount": float(amount), "note": note}


def read_ledger(path, separator=","):
    """Every entry of a ledger file, skipping blank lines and comments."""
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entries.append(parse_line(line, separator))
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
    return entries


def balance(entries, account):
    """The sum of the amounts of one account."""
    total = 0.0
    for entry in entries:
        if entry["account"] == account:
            total += entry["amount"]
    return round(total, 2)


def accounts(entries):
    """The accounts of the ledger, sorted by name."""
    return sorted({entry["account"] for entry in entries})
'''


def grounded_prompts() -> dict[str, tuple[str, str]]:
    """{name: (kind, user message)}: copy-heavy, extract and chat prompts."""
    text = prompts.TEXT_FILE.read_text(encoding="utf-8")
    passage = "\n\n".join(text.split("\n\n")[:PASSAGE_PARAGRAPHS])
    typed = passage
    for right, wrong in TYPOS:
        typed = typed.replace(right, wrong, 1)
    return {
        "repeat": ("copy", f"Repeat the following passage exactly, word for word.\n\n{passage}"),
        "typos": (
            "copy",
            f"Correct the spelling mistakes in the following passage and write out the whole corrected passage.\n\n{typed}",
        ),
        "code edit": (
            "copy",
            f"Rename the function parse_line to parse_record everywhere in this code and write out the complete updated code.\n\n{CODE}",
        ),
        "summarize": ("extract", f"Summarize the following passage in five sentences.\n\n{passage}"),
        "quote": (
            "extract",
            f"{passage}\n\nQuoting sentences from the passage above, explain why some farmers thought the clock was wrong and what the clockmaker said.",
        ),
        "chat: story": ("chat", prompts.CHAT_PROMPT),
        "chat: sky": ("chat", prompts.BATCH_PROMPTS[1]),
        "chat: cooking": ("chat", prompts.BATCH_PROMPTS[2]),
    }


class Memgpt:
    def __init__(self, lm, lookup: int | None):
        self.lm, self.lookup = lm, lookup

    def run(self, ids: list[int], new_tokens: int) -> dict:
        from memgpt_runtime.request import Done, Forward, Step, Verify
        from memgpt_runtime.search import calls, drive

        options = {"max_new_tokens": new_tokens, "do_sample": False}
        if self.lookup:
            options["prompt_lookup_num_tokens"] = self.lookup
        request, _ = self.lm.resolve([ids], **options)
        counts = {"calls": 0, "drafted": 0}

        def counted(search):  # the search's model calls, counted on their way to the cache
            reply = None
            try:
                while True:
                    event = search.send(reply)
                    if isinstance(event, (Forward, Verify)):
                        counts["calls"] += 1
                        counts["drafted"] += event.tokens.shape[-1] - 1 if isinstance(event, Verify) else 0
                    reply = yield event
            except StopIteration:
                return
            finally:
                search.close()

        stamps, start = [], time.perf_counter()
        for event in drive(self.lm.new_state(request), counted(calls(request))):
            if isinstance(event, Step):
                stamps.append(time.perf_counter() - start)
            elif isinstance(event, Done):
                tokens = event.result.sequences[0, len(ids) :].tolist()
        accepted = len(tokens) - 1 - counts["calls"]
        return {
            "tokens": tokens,
            "stamps": stamps,
            "calls": counts["calls"],
            "drafted": counts["drafted"],
            "accepted": accepted,
        }

    def chat_ids(self, message: str) -> list[int]:
        return self.lm.tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True)


class Transformers:
    def __init__(self, folder: Path, threads: int, lookup: int | None, eos: list[int]):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.lookup, self.eos = lookup, eos

    def run(self, ids: list[int], new_tokens: int) -> dict:
        import torch

        stamps, start = [], time.perf_counter()
        puts = []

        class Streamer:  # the first put is the prompt; each later one the tokens of one model call
            def put(self, value):
                puts.append(int(value.numel()))
                stamps.extend([time.perf_counter() - start] * int(value.numel()))

            def end(self):
                pass

        options = {"prompt_lookup_num_tokens": self.lookup} if self.lookup else {}
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = self.model.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=self.eos,
                pad_token_id=self.eos[0],
                streamer=Streamer(),
                **options,
            )
        tokens = out[0, len(ids) :].tolist()
        stamps = stamps[len(ids) :]
        calls = len(puts) - 2  # after the prompt's put and the prefill's token
        return {
            "tokens": tokens,
            "stamps": stamps,
            "calls": calls,
            "drafted": None,
            "accepted": len(tokens) - 1 - calls,
        }


def decode_rate(run: dict) -> float:
    stamps = run["stamps"]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else float("nan")


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The index of the first new token where two answers differ, or None if they are equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lookup", description=__doc__.splitlines()[0])
    parser.add_argument("--int4", type=Path, required=True, help="a memgpt int4 export of the default model")
    parser.add_argument("--int8", type=Path, required=True, help="a memgpt int8 export of the default model")
    parser.add_argument(
        "--hf", type=Path, help="the HF folder of the default model (default: built from the GGUF in --cache)"
    )
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / ".cache")
    parser.add_argument("--lookup", type=int, default=10, help="prompt_lookup_num_tokens (default 10)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true", help="memgpt only")
    parser.add_argument("--only", help="comma-separated prompt names, run in this order (default all)")
    parser.add_argument("--out", type=Path, help="write the raw runs and the summary as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import memgpt_runtime as mr

    engines = {}
    for precision, folder in (("int4", args.int4), ("int8", args.int8)):
        lm = mr.load(folder, threads=args.threads)
        engines[f"memgpt {precision}"] = Memgpt(lm, None)
        engines[f"memgpt {precision} lookup"] = Memgpt(lm, args.lookup)
    reference = engines["memgpt int4"]
    if not args.no_torch:
        hf = args.hf or models.build_hf("default", args.cache / "hf")
        eos = list(reference.lm.manifest.tokens.eos_token_ids)
        engines["pytorch fp32"] = Transformers(hf, args.threads, None, eos)
        engines["pytorch fp32 lookup"] = Transformers(hf, args.threads, args.lookup, eos)
    table = grounded_prompts()
    if args.only:
        table = {k: table[k] for k in args.only.split(",")}
    inputs = {name: reference.chat_ids(message) for name, (_, message) in table.items()}

    for engine in engines.values():  # warmup, not kept: the first runs of a session allocate
        engine.run(inputs[next(iter(table))], 8)
    runs: dict[str, dict[str, list[dict]]] = {e: {} for e in engines}
    loads = []
    for name in table:  # prompt after prompt, so that a run cut short still reports the prompts it finished
        for r in range(args.repeats):
            for engine in interleave.order(list(engines), r):
                runs[engine].setdefault(name, []).append(engines[engine].run(inputs[name], args.new_tokens))
                time.sleep(interleave.SETTLE_SECONDS)
        loads.append(os.getloadavg()[0])
        summary = summarize(runs, table, inputs)
        print(f"{name} done; load average {loads[-1]:.2f}\n" + markdown(summary, args), flush=True)
        if args.out:
            args.out.write_text(json.dumps({"summary": summary, "runs": runs, "load_averages": loads}, indent=1))
    return 0


def summarize(runs: dict, table: dict, inputs: dict) -> dict:
    out = {}
    for engine, per_prompt in runs.items():
        for name, rs in per_prompt.items():
            first = rs[0]
            row = {
                "kind": table[name][0],
                "prompt_tokens": len(inputs[name]),
                "new_tokens": len(first["tokens"]),
                "tokens_per_s": float(np.median([decode_rate(x) for x in rs])),
                "tokens_per_call": (len(first["tokens"]) - 1) / max(first["calls"], 1),
                "kept_of_drafted": (first["accepted"] / first["drafted"]) if first["drafted"] else None,
            }
            base = engine.removesuffix(" lookup")
            if engine != base:
                row["speedup"] = row["tokens_per_s"] / out[(base, name)]["tokens_per_s"]
                row["first_difference"] = first_difference(first["tokens"], runs[base][name][0]["tokens"])
            out[(engine, name)] = row
    return {f"{e} | {p}": v for (e, p), v in out.items()}


def markdown(summary: dict, args) -> str:
    lines = [
        f"K = {args.lookup}, greedy, up to {args.new_tokens} new tokens, {args.threads} threads, "
        f"medians of {args.repeats} rounds; load average now {os.getloadavg()[0]:.1f}",
        "",
        "| engine | prompt | kind | prompt tokens | new tokens | decode tokens/s | x without lookup | tokens per call | drafts kept | answer differs from token |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, row in summary.items():
        engine, name = key.split(" | ")
        kept = "" if row["kept_of_drafted"] is None else f"{row['kept_of_drafted']:.0%}"
        speed = f"{row['speedup']:.2f}x" if "speedup" in row else ""
        differs = (
            ""
            if "speedup" not in row
            else ("same" if row["first_difference"] is None else str(row["first_difference"]))
        )
        lines.append(
            f"| {engine} | {name} | {row['kind']} | {row['prompt_tokens']} | {row['new_tokens']} | "
            f"{row['tokens_per_s']:.1f} | {speed} | {row['tokens_per_call']:.2f} | {kept} | {differs} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
