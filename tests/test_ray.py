"""Scale-out on a local Ray cluster (one per module, 2 CPUs): `memgpt batch --ray` gives the local job's rows,
a killed replica has its rows redone, and `memgpt serve --ray-replicas` answers as the single-process server,
a full replica refusing in OpenAI's shape."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

ray = pytest.importorskip("ray")

import psutil  # noqa: E402

import memgpt_runtime as mr  # noqa: E402
from batch_rows import ROWS, by_id, expected_row, memgpt, read_output, write_input  # noqa: E402
from memgpt_runtime.batch.output import PartialOutput  # noqa: E402
from memgpt_runtime.batch.ray_data import run_on_ray  # noqa: E402
from memgpt_runtime.batch.rows import Row  # noqa: E402
from server_process import ServerProcess, assert_error, assert_refused_when_full, wait_until  # noqa: E402

PROMPTS = ["The quick brown fox", "Once upon a time there was", "def main():", "Numbers: 0 1 2 3"]
ROWS_KILLED = 120  # rows of the killed-replica job: enough batches of 2 that the kill lands mid-job


@pytest.fixture(scope="module")
def cluster():
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def lm(tiny_llama_export):
    return mr.load(tiny_llama_export)


def test_ray_rows_equal_the_local_jobs(cluster, tiny_llama_export, lm, tmp_path):
    source = write_input(tmp_path / "in.jsonl")
    run = memgpt(
        "batch",
        tiny_llama_export,
        source,
        "-o",
        tmp_path / "ray.jsonl",
        "--ray",
        cluster,
        "--replicas",
        2,
        "--batch-size",
        3,
        "--slots",
        4,
    )
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "ray.jsonl.partial").exists()
    rows = by_id(read_output(tmp_path / "ray.jsonl"))
    assert set(rows) == {("id", row["id"]) for row, _ in ROWS} | {("line", 3), ("line", 12), ("line", 13)}
    for row, options in ROWS:
        got = rows["id", row["id"]]
        if isinstance(options, dict):
            assert got == expected_row(lm, row, options), row["id"]
        else:
            assert got["error"]["param"] == options
    assert "3 malformed lines, 4 rows with errors" in run.stderr


def test_ray_resume_skips_the_rows_already_written(cluster, tiny_llama_export, lm, tmp_path):
    source = write_input(tmp_path / "in.jsonl")
    kept = {
        "id": 2,
        "text": "written before the crash",
        "finish_reason": "length",
        "prompt_tokens": 1,
        "completion_tokens": 1,
    }
    (tmp_path / "out.jsonl.partial").write_text(json.dumps(kept) + "\n")
    run = memgpt("batch", tiny_llama_export, source, "-o", tmp_path / "out.jsonl", "--ray", cluster, "--resume")
    assert run.returncode == 0, run.stderr
    rows = by_id(read_output(tmp_path / "out.jsonl"))
    assert rows["id", 2] == kept and len(rows) == len(ROWS) + 3
    assert rows["id", "greedy"] == expected_row(lm, *ROWS[0])


def test_replicas_that_do_not_fit_the_cluster_are_refused(cluster, tiny_llama_export, tmp_path):
    source = write_input(tmp_path / "in.jsonl")
    run = memgpt("batch", tiny_llama_export, source, "-o", tmp_path / "out.jsonl", "--ray", cluster, "--replicas", 3)
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1] == (
        "error: 3 replicas x 1 threads need 3 CPUs but the Ray cluster has 2; lower the replicas or their threads"
    )


def _replica_pids() -> list[int]:
    """Worker processes of Ray Data's actor pool (their process title names the map operator)."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::MapWorker"):
            pids.append(proc.pid)
    return pids


def test_a_killed_replica_has_its_rows_redone(cluster, tiny_llama_export, lm, tmp_path):
    rows = [
        Row(i + 1, f"r{i}", {"prompt": PROMPTS[i % 4], "max_tokens": 32, "temperature": 0}) for i in range(ROWS_KILLED)
    ]
    output = PartialOutput(tmp_path / "out.jsonl")
    failure = []

    def job():
        try:
            run_on_ray(tiny_llama_export, rows, output, "local", replicas=2, threads=1, batch_size=2, slots=2)
        except BaseException as exc:  # the test thread reports it
            failure.append(exc)

    thread = threading.Thread(target=job)
    thread.start()
    seen: list[int] = []

    def running() -> bool:  # a replica's process, once rows are coming out
        seen[:] = _replica_pids() if output.written > 0 else []
        return bool(seen)

    assert wait_until(running, timeout=120), "no replica ran"
    victim = seen[0]
    os.kill(victim, signal.SIGKILL)
    written_before = output.written
    thread.join(timeout=180)
    assert not thread.is_alive() and not failure, failure
    assert written_before < len(rows)  # the replica died mid-job
    output.finish()
    got = by_id(read_output(tmp_path / "out.jsonl"))
    assert set(got) == {("id", f"r{i}") for i in range(ROWS_KILLED)}
    for i in range(4):  # every prompt's rows all equal generate(), whichever replica ran them
        expected = expected_row(lm, {"id": None, "prompt": PROMPTS[i]}, dict(max_new_tokens=32))
        assert {got["id", f"r{j}"]["text"] for j in range(i, ROWS_KILLED, 4)} == {expected["text"]}
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE


@pytest.fixture(scope="module")
def served(cluster, tiny_llama_export, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = ServerProcess(
        tiny_llama_export,
        "--model-name",
        "tiny",
        "--ray-replicas",
        "1",
        "--ray",
        cluster,
        "--threads",
        "1",
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        api_key="k",
        log=log,
    )
    try:
        proc.wait_healthy(timeout=180)
        yield proc
    finally:
        assert proc.stop() == 0, proc.output()


def test_serve_answers_as_the_single_process_server(served, lm):
    out = served.client().completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=12, temperature=0)
    expected = expected_row(lm, {"id": None, "prompt": PROMPTS[0]}, dict(max_new_tokens=12))
    assert out.choices[0].text == expected["text"]
    assert out.usage.completion_tokens == expected["completion_tokens"]
    status, _, body = served.request("POST", "/v1/completions", {"model": "tiny", "prompt": "hi", "top_p": 1.5})
    assert_error(status, body, 400, param="top_p")
    status, _, body = served.request("GET", "/v1/models", key="wrong")
    assert_error(status, body, 401)


def test_a_full_replica_answers_openais_503_with_retry_after(served):
    """Eight requests at once on one replica with one slot and a queue of one: one runs, one waits, the others are
    refused by the replica's engine as by the single-process server (OpenAI's JSON, Retry-After), not by Serve."""
    body = {"model": "tiny", "prompt": PROMPTS[1], "max_tokens": 200, "temperature": 0, "min_tokens": 200}
    assert_refused_when_full(served.requests_at_once("/v1/completions", body, 8), tokens=200)
