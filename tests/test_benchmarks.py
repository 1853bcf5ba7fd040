"""Spec: the benchmark suite's quick mode writes sane JSON, tables and plots; failures and skips are reported.

The smoke run builds its own tiny models in a temporary cache (no network) and runs PyTorch and memgpt
(fp32, int8) plus llama.cpp in both its formats, which has no GGUF file for the tiny model and must be reported
as skipped; then the encoder-decoder part on the tiny Marian, where only PyTorch and memgpt take part.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINES = "pytorch,memgpt fp32,memgpt int8,llama.cpp"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("bench") / "results"
    cache = out.parent / "cache"
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--engines",
        ENGINES,
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    return done, out


def test_quick_run_exits_0_and_writes_every_output(quick_run):
    done, out = quick_run
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("results.json", "results.md", "tokens_per_second.png", "step_latency.png", "seq2seq.png"):
        assert (out / name).is_file(), name
    for name in ("tokens_per_second.png", "step_latency.png", "seq2seq.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_quick_json_has_sane_figures(quick_run):
    _, out = quick_run
    result = json.loads((out / "results.json").read_text())
    engines = result["engines"]
    assert list(engines) == ["pytorch fp32", "memgpt fp32", "memgpt int8", "llama.cpp q4_1", "llama.cpp q4_0"]
    assert engines["llama.cpp q4_1"]["status"] == engines["llama.cpp q4_0"]["status"] == "skipped"
    settings = result["settings"]
    for name in ("pytorch fp32", "memgpt fp32", "memgpt int8"):
        e = engines[name]
        assert e["status"] == "ok", e
        w = e["workloads"]
        for fig in (
            w["prefill"]["seconds"],
            w["greedy"]["decode_tokens_per_second"],
            w["beam"]["seconds"],
            w["batch"]["tokens_per_second"],
        ):
            assert len(fig["values"]) == settings["repeats"]
            assert 0 < fig["min"] <= fig["median"] <= fig["max"]
        assert len(w["greedy"]["tokens"]) == settings["decode_new"]
        assert len(w["steps"]["latency_ms"]) == settings["steps_new"]
        assert all(x > 0 for x in w["steps"]["latency_ms"])
        assert 0 < e["load_seconds"] and 0 < e["rss_after_load_mb"] <= e["peak_rss_mb"] and e["size_mb"] > 0
        q = e["quality"]
        assert math.isfinite(q["perplexity"]) and q["perplexity"] > 1
        assert q["scored_tokens"] == settings["ppl_tokens"] - 1
        assert 0 <= q["agreement_prefix"] <= q["agreement_positions"] <= 1
    # fp32 on the same weights: the same perplexity and the same greedy tokens as PyTorch
    base, fp32 = engines["pytorch fp32"]["quality"], engines["memgpt fp32"]["quality"]
    assert fp32["perplexity"] == pytest.approx(base["perplexity"], rel=1e-4)
    assert fp32["agreement_prefix"] == 1.0 and base["agreement_prefix"] == 1.0
    # the runtime does not import torch: its worker stays far below PyTorch's
    assert engines["memgpt fp32"]["rss_after_load_mb"] < engines["pytorch fp32"]["rss_after_load_mb"]


def test_quick_markdown_has_ratio_tables(quick_run):
    done, out = quick_run
    text = (out / "results.md").read_text()
    assert done.stdout == text + "\n"  # the report, and nothing else, on stdout
    assert "## Speed (median, speed-up vs PyTorch)" in text
    speed = text.split("## Speed (median, speed-up vs PyTorch)")[1].split("## Spread")[0]
    base = next(line for line in speed.splitlines() if line.startswith("| pytorch fp32 |"))
    assert base.count("(1.00x)") == 6  # the baseline against itself: five workloads and the step latency
    # without llama-cpp-python (as in `make test`) it is "not installed"; with it, the tiny model has no GGUF
    for name in ("llama.cpp q4_1", "llama.cpp q4_0"):
        assert (f"- {name}: skipped (no GGUF file for this model)" in text) != (
            f"- {name}: skipped (not installed (pip install llama-cpp-python))" in text
        )
    decoder_only, seq2seq = text.split("## Encoder-decoder (tiny random Marian, --quick)")
    for part in (decoder_only, seq2seq):
        rows = [line for line in part.splitlines() if line.startswith("| memgpt int8 |")]
        assert len(rows) == 3  # speed, spread, memory/quality


def test_quick_seq2seq_part_has_sane_figures_and_fp32_matches_pytorch(quick_run):
    _, out = quick_run
    part = json.loads((out / "results.json").read_text())["seq2seq"]
    assert part["status"] == "ok" and part["settings"]["model"] == "tiny-marian"
    engines, s = part["engines"], part["settings"]
    assert list(engines) == ["pytorch fp32", "memgpt fp32", "memgpt int8"]  # llama.cpp has no encoder-decoder path
    assert 20 <= part["inputs"]["source"] <= 80  # about 40 tokens; the tests' tokenizer decides
    assert len(set(part["inputs"]["batch"])) == s["batch_size"] == 8  # 8 different lengths
    for e in engines.values():
        assert e["status"] == "ok", e
        w = e["workloads"]
        assert set(w) == {"translate", "beam", "batch"}
        for fig in (
            w["translate"]["seconds"],
            w["translate"]["decode_tokens_per_second"],
            w["beam"]["seconds"],
            w["batch"]["tokens_per_second"],
        ):
            assert len(fig["values"]) == s["repeats"]
            assert 0 < fig["min"] <= fig["median"] <= fig["max"]
        assert len(w["translate"]["tokens"]) == s["new_tokens"] == w["beam"]["new_tokens"] == w["batch"]["new_tokens"]
        assert 0 < e["load_seconds"] and 0 < e["rss_after_load_mb"] <= e["peak_rss_mb"] and e["size_mb"] > 0
        q = e["quality"]
        assert [len(c) for c in q["continuations"]] == [s["new_tokens"]] * s["agreement_sources"]
        assert 0 <= q["agreement_prefix"] <= q["agreement_positions"] <= 1
    # fp32 on the same weights: the same greedy ids as PyTorch, source by source
    assert engines["memgpt fp32"]["quality"]["identical"] == s["agreement_sources"]
    tokens = [engines[n]["workloads"]["translate"]["tokens"] for n in ("pytorch fp32", "memgpt fp32")]
    assert tokens[0] == tokens[1]
    assert engines["memgpt fp32"]["rss_after_load_mb"] < engines["pytorch fp32"]["rss_after_load_mb"]


def test_quick_markdown_has_the_seq2seq_section_with_ratios(quick_run):
    _, out = quick_run
    section = (out / "results.md").read_text().split("## Encoder-decoder (tiny random Marian, --quick)")[1]
    assert "random (fixed seed): the translations are meaningless, the timings are real" in section
    header = "| engine | (1) greedy 16 tok, s | (1) first token, s | (1) decode, tok/s | (2) beam 4x16, s | (3) batch 8x16, tok/s |"
    assert header in section
    base = next(line for line in section.splitlines() if line.startswith("| pytorch fp32 |"))
    assert base.count("(1.00x)") == 5
    fp32 = [line for line in section.splitlines() if line.startswith("| memgpt fp32 |")]
    assert len(re.findall(r"\(\d+\.\d\dx\)", fp32[0])) == 5
    assert fp32[2].endswith("| 4/4 | 100.0% | 100.0% |")


def test_the_report_of_a_seq2seq_only_run_has_no_decoder_only_tables(quick_run):
    from benchmarks import report

    _, out = quick_run
    result = json.loads((out / "results.json").read_text())
    only = {key: result[key] for key in ("threads", "baseline", "machine", "seq2seq")}
    text = report.markdown(only)
    assert text.startswith("# Benchmark results: encoder-decoder part only\n")
    assert "## Speed" not in text and "## Encoder-decoder (tiny random Marian, --quick)" in text
    from benchmarks.cli import baselines_ok

    assert baselines_ok(only) and baselines_ok(result)
    failed = {**only, "seq2seq": {"status": "failed", "error": "could not build hf: OSError: disk full"}}
    assert not baselines_ok(failed)
    assert report.markdown(failed).endswith("## Encoder-decoder\n\nNot run: could not build hf: OSError: disk full\n")


def test_a_crashing_worker_is_reported_as_failed_with_one_line(tmp_path):
    from benchmarks import suite
    from benchmarks.engines import EngineSpec

    engine = EngineSpec("broken", "no_such_adapter", "fp32", ())
    result = suite.run_worker({"threads": 1, "job": "speed", "adapter": "no_such_adapter"}, 60, tmp_path, engine)
    assert result["status"] == "failed"
    assert result["error"].startswith("ModuleNotFoundError: No module named 'benchmarks.engines.no_such_adapter'")
    assert "\n" not in result["error"]


def test_agreement_is_the_share_before_the_first_divergence_and_the_share_of_equal_positions():
    from benchmarks.suite import add_agreement

    results = {
        "pytorch fp32": {"quality": {"continuations": [[1, 2, 3, 4], [5, 6, 7, 8]]}},
        "other": {"quality": {"continuations": [[1, 2, 9, 4], [5, 6, 7, 8]]}},
    }
    add_agreement(results)
    assert results["other"]["quality"]["agreement_prefix"] == pytest.approx((2 / 4 + 1) / 2)
    assert results["other"]["quality"]["agreement_positions"] == pytest.approx((3 / 4 + 1) / 2)
    assert results["pytorch fp32"]["quality"]["agreement_prefix"] == 1.0


def test_register_adds_bench_without_importing_heavy_modules():
    code = (
        "import argparse, sys\n"
        "from benchmarks.cli import register, run\n"
        "p = argparse.ArgumentParser(); sub = p.add_subparsers(dest='command'); register(sub)\n"
        "args = p.parse_args(['bench', '--quick', '--threads', '3'])\n"
        "assert args.func is run and args.quick and args.threads == 3\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'numpy', 'benchmarks.suite') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--engines", "nonsense"], "unknown engine 'nonsense'"),
        (["--threads", "0"], "--threads and --repeats must be at least 1"),
        (["--no-seq2seq", "--only-seq2seq"], "--no-seq2seq and --only-seq2seq exclude each other"),
        (["--out", __file__], f"--out {__file__} exists and is not a folder"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    from benchmarks.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_suite_whose_fp32_folder_cannot_be_built_stops_with_one_line_and_exit_1(tmp_path, monkeypatch):
    from benchmarks import models, suite
    from benchmarks.errors import BenchError

    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr(models, "build_hf", disk_full)
    with pytest.raises(BenchError, match="cannot build the memgpt fp32 model.*OSError: disk full") as caught:
        suite.run_suite(suite.QUICK_SETTINGS, 1, tmp_path)
    assert caught.value.exit_code == 1 and "\n" not in str(caught.value)


def test_engine_selection_always_includes_the_baseline():
    from benchmarks.cli import select_engines

    assert [e.name for e in select_engines("memgpt int4")] == ["pytorch fp32", "memgpt int4"]
    everything = [e.name for e in select_engines(None)]
    assert everything[0] == "pytorch fp32" and len(everything) == 10
    assert everything[-2:] == ["llama.cpp q4_1", "llama.cpp q4_0"]  # llama.cpp in its own file and its fastest format
