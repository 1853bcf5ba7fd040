"""PNG plots of a suite's results: tokens/s per engine, per-step latency against position (workload e), and the
encoder-decoder part's speed-ups against PyTorch. Each plot is written only when its part ran.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .columns import SEQ2SEQ_COLUMNS, speedup


def write_plots(result: dict, folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}
    if "engines" in result:
        paths.update(_decoder_only(plt, result, folder))
    part = result.get("seq2seq") or {}
    if part.get("status") == "ok":
        paths["seq2seq"] = _seq2seq(plt, part, result["threads"], folder / "seq2seq.png")
    return paths


def _decoder_only(plt, result: dict, folder: Path) -> dict[str, Path]:
    ok = {n: e for n, e in result["engines"].items() if e.get("status") == "ok"}
    paths = {"tokens_per_second": folder / "tokens_per_second.png", "step_latency": folder / "step_latency.png"}

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (workload, key, title) in zip(
        axes,
        [
            ("greedy", "decode_tokens_per_second", "(b) greedy decode, batch 1"),
            ("batch", "tokens_per_second", "(d) greedy, batch of {batch_size}"),
        ],
    ):
        names, med, low, high = [], [], [], []
        for name, e in ok.items():
            fig_ = ((e.get("workloads") or {}).get(workload) or {}).get(key)
            if isinstance(fig_, dict):
                names.append(name)
                med.append(fig_["median"])
                low.append(fig_["median"] - fig_["min"])
                high.append(fig_["max"] - fig_["median"])
        ax.bar(range(len(names)), med, yerr=[low, high], capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("new tokens / s (median, min–max)")
        ax.set_title(title.format(**result["settings"]))
    fig.suptitle(f"{result['model']}, {result['threads']} threads")
    fig.tight_layout()
    fig.savefig(paths["tokens_per_second"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, e in ok.items():
        steps = (e.get("workloads") or {}).get("steps") or {}
        lat = np.asarray(steps.get("latency_ms") or [])
        if len(lat) < 2:
            continue
        decode = lat[1:]  # the first is the prefill
        positions = steps["prompt_tokens"] + 1 + np.arange(len(decode))
        w = max(1, min(8, len(decode) // 4))
        smooth = np.convolve(decode, np.ones(w) / w, mode="valid")  # moving average over w steps
        ax.plot(positions[w - 1 :], smooth, label=name, lw=1.2)
    ax.set_xlabel("position in the sequence (prompt + generated)")
    ax.set_ylabel("ms per step (moving average)")
    ax.set_title(f"(e) per-step latency of one greedy generation, {result['model']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths["step_latency"], dpi=110)
    plt.close(fig)
    return paths


def _seq2seq(plt, part: dict, threads: int, path: Path) -> Path:
    """Grouped bars: each engine's speed-up against the baseline on workloads (1)-(3), medians."""
    engines = {n: e for n, e in part["engines"].items() if e.get("status") == "ok"}
    base = engines.get(part["baseline"], {})
    columns = [c for c in SEQ2SEQ_COLUMNS if c[2] != "first_token_seconds"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(engines))
    for i, (name, e) in enumerate(engines.items()):
        ratios = [speedup(e, base, w, k, kind) or 0.0 for _, w, k, kind in columns]
        ax.bar(np.arange(len(columns)) + i * width, ratios, width, label=name)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(
        np.arange(len(columns)) + width * (len(engines) - 1) / 2,
        [title.format(**part["settings"]) for title, _, _, _ in columns],
        fontsize=8,
    )
    ax.set_ylabel(f"speed-up vs {part['baseline']} (median)")
    ax.set_title(f"Encoder-decoder, {part['settings']['model']}, {threads} threads", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
