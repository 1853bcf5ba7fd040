"""Write a suite's results: `results.json` (everything), `results.md` (tables with ratios to PyTorch) and plots.

Ratios are speed-ups against the PyTorch baseline of the same run: baseline seconds / engine seconds, or
engine tokens/s / baseline tokens/s, so above 1 is faster either way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .columns import SEQ2SEQ_COLUMNS, SPEED_COLUMNS, figure, speedup

SEQ2SEQ_TITLES = {
    "marian": "Encoder-decoder (Marian, random weights, opus-mt-en-de shape)",
    "tiny-marian": "Encoder-decoder (tiny random Marian, --quick)",
}


def _cell(entry: dict, base: dict, workload: str, key: str, kind: str, spread: bool = False) -> str:
    w = (entry.get("workloads") or {}).get(workload) or {}
    if w.get("status") == "n/a":
        return "n/a"
    fig = figure(entry, workload, key)
    if fig is None:
        return "–"
    digits = 3 if kind == "s" else 1
    if spread:
        return f"{fig['median']:.{digits}f} [{fig['min']:.{digits}f}–{fig['max']:.{digits}f}]"
    ratio = speedup(entry, base, workload, key, kind)
    return f"{fig['median']:.{digits}f}" if ratio is None else f"{fig['median']:.{digits}f} ({ratio:.2f}x)"


def step_window(new_tokens: int) -> int:
    """How many decode steps of workload (e) are averaged at its start and at its end."""
    return max(1, min(32, (new_tokens - 1) // 2))


def step_summary(entry: dict) -> tuple[float, float] | None:
    """Mean ms per step over the first and the last decode steps of workload (e) (the prefill left out)."""
    lat = ((entry.get("workloads") or {}).get("steps") or {}).get("latency_ms")
    if not lat or len(lat) < 3:
        return None
    decode, w = lat[1:], step_window(len(lat))  # the first latency is the prefill
    return float(np.mean(decode[:w])), float(np.mean(decode[-w:]))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(result: dict) -> str:
    out = _decoder_only(result) if "engines" in result else _seq2seq_title(result)
    if "seq2seq" in result:
        out += ["", *seq2seq_section(result)]
    return "\n".join(out) + "\n"


def _agreement_cells(quality: dict) -> list[str]:
    """The greedy-agreement columns (prefix, positions) of one engine's quality results, "–" when not measured."""
    return [f"{quality[key]:.1%}" if key in quality else "–" for key in ("agreement_prefix", "agreement_positions")]


def _memory_cells(e: dict) -> list[str]:
    """precision, load s, RSS after load, peak RSS, size on disk."""
    size = f"{e['size_mb']:.1f}" if e["size_mb"] < 10 else f"{e['size_mb']:.0f}"
    rss = [f"{e['rss_after_load_mb']:.0f}", f"{e['peak_rss_mb']:.0f}"]
    return [e["precision"], f"{e['load_seconds']:.2f}", *rss, size]


def _not_run(engines: dict) -> list[str]:
    others = [(n, e) for n, e in engines.items() if e.get("status") != "ok"]
    return [f"- {n}: {e['status']} ({e.get('reason') or e.get('error')})" for n, e in others]


def _decoder_only(result: dict) -> list[str]:
    s, engines = result["settings"], result["engines"]
    base = engines.get(result["baseline"], {})
    ok = {name: e for name, e in engines.items() if e.get("status") == "ok"}
    out = [
        f"# Benchmark results: {result['model']}",
        "",
        f"{result['threads']} threads for every engine; {s['repeats']} timed repeats after {s['warmup']} warm-up; "
        f"median, and in brackets min–max. Ratios are speed-ups against {result['baseline']} in the same run "
        "(above 1 = faster). Model load and tokenization are not timed.",
        f"Machine: {_machine(result['machine'])}. "
        f"Suite time: {result['run_seconds']:.0f}s (plus {result['build_seconds']:.0f}s building or loading cached models).",
        "",
        "## Speed (median, speed-up vs PyTorch)",
        "",
    ]
    steps_title = f"(e) ms/step, first/last {step_window(s['steps_new'])} of {s['steps_new']}"
    header = ["engine"] + [t.format(**s) for t, _, _, _ in SPEED_COLUMNS] + [steps_title]
    rows = []
    for name, e in ok.items():
        steps = step_summary(e)
        ref = step_summary(base)
        step_cell = "–" if steps is None else f"{steps[0]:.1f} / {steps[1]:.1f}"
        if steps and ref:
            step_cell += f" ({ref[1] / steps[1]:.2f}x)"
        rows.append([name] + [_cell(e, base, w, k, kind) for _, w, k, kind in SPEED_COLUMNS] + [step_cell])
    out += _table(header, rows)
    out += ["", "## Spread (median [min–max])", ""]
    out += _table(
        header[:-1],
        [[n] + [_cell(e, base, w, k, kind, spread=True) for _, w, k, kind in SPEED_COLUMNS] for n, e in ok.items()],
    )
    out += ["", "## Memory, size, load time and quality", ""]
    header = [
        "engine",
        "precision",
        "load, s",
        "RSS after load, MB",
        "peak RSS, MB",
        "size on disk, MB",
        "perplexity",
        "greedy agreement (prefix)",
        "greedy agreement (positions)",
    ]
    rows = []
    for name, e in ok.items():
        q = e.get("quality") or {}
        ppl = (
            f"{q['perplexity']:.3f}"
            if "perplexity" in q
            else ("failed: " + str(q.get("error")) if q.get("status") == "failed" else "–")
        )
        rows.append(
            [
                name,
                *_memory_cells(e),
                ppl,
                *_agreement_cells(q),
            ]
        )
    out += _table(header, rows)
    if _not_run(engines):
        out += ["", "## Not run", "", *_not_run(engines)]
    return out


def _machine(machine: dict) -> str:
    """ "PLATFORM, N CPUs (MODEL; FLAGS)": the CPU part only in results that recorded it."""
    cpu = f" ({machine['cpu']})" if machine.get("cpu") else ""
    return f"{machine['platform']}, {machine['cpus']} CPUs{cpu}"


def _seq2seq_title(result: dict) -> list[str]:
    machine = result["machine"]
    return [
        "# Benchmark results: encoder-decoder part only",
        "",
        f"{result['threads']} threads for every engine. Machine: {_machine(machine)}.",
    ]


def seq2seq_section(result: dict) -> list[str]:
    """The encoder-decoder part: speed with ratios to PyTorch, spread, memory and greedy agreement."""
    part = result["seq2seq"]
    out = [f"## {SEQ2SEQ_TITLES.get(part.get('settings', {}).get('model'), 'Encoder-decoder')}", ""]
    if part.get("status") != "ok":
        return out + [f"Not run: {part.get('error')}"]
    s, engines, inputs = part["settings"], part["engines"], part["inputs"]
    base = engines.get(part["baseline"], {})
    ok = {name: e for name, e in engines.items() if e.get("status") == "ok"}
    out += [
        f"Model: {part['model']}. Its weights are random (fixed seed): the translations are meaningless, the "
        "timings are real. Sources are English sentences tokenized by the tests' small Marian tokenizer "
        f"(source of (1) and (2): {inputs['source']} tokens; batch: {', '.join(map(str, inputs['batch']))}, "
        "right-padded with an attention mask). Every engine generates exactly the asked-for number of tokens "
        "(end of sequence banned until then; the model's forced EOS makes the last one </s> everywhere). "
        f"{s['repeats']} timed repeats after {s['warmup']} warm-up, median; ratios are speed-ups against "
        f"{part['baseline']} in the same run (above 1 = faster). Wall times include the encoder. Only PyTorch and "
        f"memgpt take part. Part time: {part['run_seconds']:.0f}s (plus {part['build_seconds']:.0f}s building or "
        "loading cached models).",
        "",
    ]
    header = ["engine"] + [t.format(**s) for t, _, _, _ in SEQ2SEQ_COLUMNS]

    def cells(e: dict, spread: bool) -> list[str]:
        return [_cell(e, base, w, k, kind, spread) for _, w, k, kind in SEQ2SEQ_COLUMNS]

    out += _table(header, [[n, *cells(e, False)] for n, e in ok.items()])
    out += ["", "Spread (median [min–max]):", ""]
    out += _table(header, [[n, *cells(e, True)] for n, e in ok.items()])
    out += [
        "",
        f"Memory, size, load time, and greedy agreement with {part['baseline']} ({s['new_tokens']} new tokens "
        f"on each of {len(inputs['agreement'])} other sources):",
        "",
    ]
    header = [
        "engine",
        "precision",
        "load, s",
        "RSS after load, MB",
        "peak RSS, MB",
        "size on disk, MB",
        "identical outputs",
        "greedy agreement (prefix)",
        "greedy agreement (positions)",
    ]
    rows = []
    for name, e in ok.items():
        q = e.get("quality") or {}
        identical = f"{q['identical']}/{len(q['continuations'])}" if "identical" in q else "–"
        rows.append(
            [
                name,
                *_memory_cells(e),
                identical,
                *_agreement_cells(q),
            ]
        )
    out += _table(header, rows)
    if _not_run(engines):
        out += ["", "Not run:", "", *_not_run(engines)]
    return out


def write(result: dict, folder: Path) -> dict[str, Path]:
    from . import plots

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "markdown": folder / "results.md"}
    paths["json"].write_text(json.dumps(result, indent=1))
    paths["markdown"].write_text(markdown(result))
    paths.update(plots.write_plots(result, folder))
    return paths


if __name__ == "__main__":  # `python -m benchmarks.report DIR`: rewrite the tables and plots from DIR/results.json
    import sys

    folder = Path(sys.argv[1])
    write(json.loads((folder / "results.json").read_text()), folder)
