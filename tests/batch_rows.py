"""Input rows for the `memgpt batch` tests, and the output each good row must have: what `memgpt generate` gives
the same prompt with the same options (its `lm.generate` call and decoding), computed in the test process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MEMGPT = [sys.executable, "-m", "memgpt_runtime.cli"]

CHAT = [{"role": "user", "content": "Hello world! How are you today?"}]
# (row, the generate() options of the same request); None = an error row naming that field
ROWS = [
    ({"id": "greedy", "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0}, dict(max_new_tokens=12)),
    ({"id": 2, "prompt": "Once upon a time there was", "max_tokens": 10, "temperature": 0}, dict(max_new_tokens=10)),
    ({"id": "chat", "messages": CHAT, "max_tokens": 12, "temperature": 0}, dict(max_new_tokens=12)),
    (
        {"id": "sampled", "prompt": "def main():", "max_tokens": 12, "temperature": 0.8, "top_p": 0.9, "seed": 7},
        dict(max_new_tokens=12, do_sample=True, temperature=0.8, top_p=0.9, top_k=0, seed=7),
    ),
    (
        {"id": "sampled-n", "prompt": "Numbers: 0 1 2 3", "max_tokens": 8, "temperature": 1.0, "seed": 3, "n": 2},
        dict(max_new_tokens=8, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, seed=3, num_return_sequences=2),
    ),
    (
        {"id": "beam", "prompt": "Once upon a time", "max_tokens": 10, "use_beam_search": True, "n": 2},
        dict(max_new_tokens=10, num_beams=2, num_return_sequences=2),
    ),
    ({"id": "bad-top-p", "prompt": "hi", "top_p": 1.5}, "top_p"),
    ({"id": "unknown", "prompt": "hi", "whatever": 1}, "whatever"),
    ({"id": "stream", "prompt": "hi", "stream": True}, "stream"),
    ({"id": "too-long", "prompt": "hi " * 40, "max_tokens": 100000}, "prompt"),
]
MALFORMED = ["{not json", json.dumps({"prompt": "no id"}), json.dumps({"id": "greedy", "prompt": "a repeated id"})]


def write_input(path: Path, rows=ROWS, malformed=MALFORMED) -> Path:
    """The rows, one per line, with the malformed lines after the second and at the end."""
    lines = [json.dumps(row) for row, _ in rows]
    lines.insert(2, malformed[0])
    lines += malformed[1:]
    path.write_text("\n".join(lines) + "\n")
    return path


def expected_row(lm, row: dict, options: dict) -> dict:
    """The output row `memgpt generate` makes of `row`: its lm.generate() call, decoded skipping special tokens."""
    ids = lm.encode_prompt(row["messages"] if "messages" in row else row["prompt"])
    result = lm.generate([ids], return_dict_in_generate=True, **options)
    eos = set(lm.generation_config(**options).eos_token_id)
    texts, reasons, count = [], [], 0
    for seq, n in zip(result.sequences, result.lengths):
        new = seq[len(ids) : len(ids) + int(n)].tolist()
        texts.append(lm.tokenizer.decode(new, skip_special_tokens=True))
        reasons.append("stop" if new and new[-1] in eos else "length")
        count += len(new)
    out = {"id": row["id"]}
    if len(texts) == 1:
        out.update(text=texts[0], finish_reason=reasons[0])
    else:
        out.update(texts=texts, finish_reasons=reasons)
    return {**out, "prompt_tokens": len(ids), "completion_tokens": count}


def read_output(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_id(rows: list[dict]) -> dict:
    """Output rows by id (error rows of unusable lines by their line); fails on a key seen twice."""
    out = {}
    for row in rows:
        key = ("line", row["line"]) if "line" in row else ("id", row["id"])
        assert key not in out, f"{key} written twice"
        out[key] = row
    return out


def memgpt(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MEMGPT, *map(str, args)], capture_output=True, text=True, timeout=timeout)
