"""The speed figures a report shows: which workload and key each column reads, and its speed-up against the
baseline. Shared by the tables (report.py) and the plots (plots.py).
"""

from __future__ import annotations

# (title, workload, key, kind): kind "s" = seconds (lower is better), "tps" = tokens/s (higher is better)
SPEED_COLUMNS = [
    ("(a) prefill {prefill_tokens} tok, s", "prefill", "seconds", "s"),
    ("(b) first token, s", "greedy", "first_token_seconds", "s"),
    ("(b) decode, tok/s", "greedy", "decode_tokens_per_second", "tps"),
    ("(c) beam {beams}x{beam_new}, s", "beam", "seconds", "s"),
    ("(d) batch {batch_size}x{batch_new}, tok/s", "batch", "tokens_per_second", "tps"),
]
SEQ2SEQ_COLUMNS = [
    ("(1) greedy {new_tokens} tok, s", "translate", "seconds", "s"),
    ("(1) first token, s", "translate", "first_token_seconds", "s"),
    ("(1) decode, tok/s", "translate", "decode_tokens_per_second", "tps"),
    ("(2) beam {beams}x{new_tokens}, s", "beam", "seconds", "s"),
    ("(3) batch {batch_size}x{new_tokens}, tok/s", "batch", "tokens_per_second", "tps"),
]


def figure(entry: dict, workload: str, key: str) -> dict | None:
    w = (entry.get("workloads") or {}).get(workload) or {}
    return w.get(key) if isinstance(w.get(key), dict) else None


def speedup(entry: dict, base: dict, workload: str, key: str, kind: str) -> float | None:
    """Baseline seconds / engine seconds, or engine tokens/s / baseline tokens/s (medians); None when missing."""
    fig, ref = figure(entry, workload, key), figure(base, workload, key)
    if fig is None or ref is None:
        return None
    return ref["median"] / fig["median"] if kind == "s" else fig["median"] / ref["median"]
