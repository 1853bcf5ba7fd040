"""`memgpt batch` on this machine: every input line answered exactly once, each row the text `memgpt generate` gives
the same prompt and options, malformed lines and refused requests as error rows in the server's shape, results
appended whole to OUTPUT.partial and renamed when the job completes, `--resume` skipping what is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import memgpt_runtime as mr
from batch_rows import MALFORMED, ROWS, by_id, expected_row, memgpt, read_output, write_input
from memgpt_runtime.batch.output import PartialOutput


@pytest.fixture(scope="module")
def lm(tiny_llama_export):
    return mr.load(tiny_llama_export)


@pytest.fixture(scope="module")
def local_run(tiny_llama_export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    source = write_input(folder / "in.jsonl")
    run = memgpt("batch", tiny_llama_export, source, "-o", folder / "out.jsonl", "--slots", 4)
    return run, folder


def test_every_line_is_answered_exactly_once(local_run):
    run, folder = local_run
    assert run.returncode == 0, run.stderr
    assert not (folder / "out.jsonl.partial").exists()
    rows = by_id(read_output(folder / "out.jsonl"))
    assert set(rows) == {("id", row["id"]) for row, _ in ROWS} | {("line", 3), ("line", 12), ("line", 13)}


def test_rows_equal_generate(local_run, lm):
    rows = by_id(read_output(local_run[1] / "out.jsonl"))
    for row, options in ROWS:
        if isinstance(options, dict):
            assert rows["id", row["id"]] == expected_row(lm, row, options), row["id"]


@pytest.mark.parametrize(
    "row_id, param, message",
    [
        ("bad-top-p", "top_p", "top_p must be in (0.0, 1.0], got 1.5"),
        ("unknown", "whatever", "unknown or unsupported parameter 'whatever'"),
        ("stream", "stream", "stream is not supported in a batch row (a batch row is answered whole)"),
        ("too-long", "prompt", "this model's maximum context length is"),
    ],
)
def test_refused_requests_get_the_servers_error(local_run, row_id, param, message):
    error = by_id(read_output(local_run[1] / "out.jsonl"))["id", row_id]["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"].startswith(message)


def test_malformed_lines_become_error_rows_and_are_counted(local_run):
    run, folder = local_run
    rows = by_id(read_output(folder / "out.jsonl"))
    assert rows["line", 3] == {
        "id": None,
        "line": 3,
        "error": {
            "message": "line 3 is not valid JSON (Expecting property name enclosed in double quotes, column 2)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        },
    }
    assert rows["line", 12]["error"]["message"] == "line 12 has no 'id'"
    assert (
        rows["line", 13]["id"] == "greedy"
        and rows["line", 13]["error"]["message"] == "line 13 repeats the id of line 1"
    )
    assert "3 malformed lines, 4 rows with errors" in run.stderr
    assert run.stderr.count("\n") == 1  # one summary line (no progress line off a terminal)


def test_a_row_equals_memgpt_generate_itself(local_run, tiny_llama_export):
    rows = by_id(read_output(local_run[1] / "out.jsonl"))
    run = memgpt("generate", tiny_llama_export, "The quick brown fox", "--max-new-tokens", 12, "--json")
    assert json.loads(run.stdout)["outputs"][0]["text"] == rows["id", "greedy"]["text"]
    run = memgpt(
        "generate", tiny_llama_export, "--chat", ROWS[2][0]["messages"][0]["content"], "--max-new-tokens", 12, "--json"
    )
    assert json.loads(run.stdout)["outputs"][0]["text"] == rows["id", "chat"]["text"]


def test_resume_skips_the_rows_already_written_and_drops_a_torn_line(tiny_llama_export, tmp_path):
    source = write_input(tmp_path / "in.jsonl")
    partial = tmp_path / "out.jsonl.partial"
    kept = {
        "id": "greedy",
        "text": "written before the crash",
        "finish_reason": "length",
        "prompt_tokens": 1,
        "completion_tokens": 1,
    }
    partial.write_text(json.dumps(kept) + "\n" + '{"id": 2, "text": "torn')
    refused = memgpt("batch", tiny_llama_export, source, "-o", tmp_path / "out.jsonl")
    assert refused.returncode == 2
    assert refused.stderr == f"error: {partial} holds an interrupted job: pass --resume to continue it, or delete it\n"
    run = memgpt("batch", tiny_llama_export, source, "-o", tmp_path / "out.jsonl", "--resume")
    assert run.returncode == 0, run.stderr
    assert "(1 rows were done already)" in run.stderr
    rows = by_id(read_output(tmp_path / "out.jsonl"))
    assert rows["id", "greedy"] == kept
    assert rows["id", 2]["text"] != "torn" and len(rows) == len(ROWS) + len(MALFORMED)


def test_partial_output_writes_whole_lines_once(tmp_path):
    out = PartialOutput(tmp_path / "o.jsonl")
    assert out.write([{"id": 1, "text": "a"}, {"id": 1, "text": "again"}, {"id": None, "line": 4, "error": {}}]) == [
        {"id": 1, "text": "a"},
        {"id": None, "line": 4, "error": {}},
    ]
    assert out.write([{"id": 1, "text": "retried"}]) == []
    out.close()
    with open(out.partial, "ab") as f:
        f.write(b'{"id": 2, "te')
    again = PartialOutput(tmp_path / "o.jsonl", resume=True)
    assert again.done == {"id:1", "line:4"}
    assert out.partial.read_bytes().endswith(b'"error": {}}\n')
    again.finish()
    assert not again.partial.exists() and len(read_output(tmp_path / "o.jsonl")) == 2


def test_the_runtime_never_imports_ray():
    code = (
        "import sys, memgpt_runtime; from memgpt_runtime.cli import build_parser; build_parser(); "
        "import memgpt_runtime.batch.cli, memgpt_runtime.batch.runner, memgpt_runtime.batch.local; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120)
    assert run.stdout == "[]\n", run.stderr
