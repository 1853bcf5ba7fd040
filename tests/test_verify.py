"""Damaged export folders: the export records every file's size and SHA-256, a load checks the sizes, and
`memgpt verify DIR` checks every byte and prints one line per problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import memgpt_runtime as mr
from memgpt_runtime.integrity import sha256
from memgpt_runtime.manifest import FILENAME

MEMGPT = [sys.executable, "-m", "memgpt_runtime.cli"]


def verify(folder) -> subprocess.CompletedProcess:
    return subprocess.run([*MEMGPT, "verify", str(folder)], capture_output=True, text=True, timeout=120)


@pytest.fixture(params=["tiny_llama_export", "tiny_llama_int4", "tiny_t5_export"])
def export(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def copy(export, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(export, folder)
    return folder


def test_the_manifest_records_every_file_the_export_wrote(export):
    files = mr.read_manifest(export).files
    on_disk = sorted(p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file())
    assert sorted(files) == [name for name in on_disk if name != FILENAME]
    for name, record in files.items():
        assert record == {"size": (export / name).stat().st_size, "sha256": sha256(export / name)}


def test_verify_passes_a_fresh_export(export):
    run = verify(export)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == f"{export}: {len(mr.read_manifest(export).files)} files OK\n"


def test_verify_finds_a_changed_byte_range_in_any_file(copy):
    for name in mr.read_manifest(copy).files:
        path = copy / name
        data = bytearray(path.read_bytes())
        start = len(data) // 2
        end = min(len(data), start + 65536)
        data[start:end] = bytes(b ^ 0xFF for b in data[start:end])
        path.write_bytes(data)
        run = verify(copy)
        assert run.returncode == 1
        assert f"{copy}: {name}: contents changed (SHA-256 differs from the export's)\n" in run.stdout
    assert len(run.stdout.splitlines()) == len(mr.read_manifest(copy).files)  # one line per damaged file


def test_a_truncated_file_fails_the_load_and_names_the_file(copy):
    name = mr.read_manifest(copy).model_file
    size = (copy / name).stat().st_size
    (copy / name).write_bytes((copy / name).read_bytes()[: size // 2])
    with pytest.raises(
        mr.ModelFolderError, match=rf"damaged \({name}: {size // 2} bytes, the export wrote {size}\).*memgpt verify"
    ):
        mr.load(copy)
    assert f"{name}: {size // 2} bytes, the export wrote {size}" in verify(copy).stdout


def test_verify_reports_missing_and_unexpected_files(copy):
    (copy / "tokenizer.json").unlink()
    (copy / "notes.txt").write_text("mine")
    run = verify(copy)
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        f"{copy}: tokenizer.json: missing",
        f"{copy}: notes.txt: not written by the export",
    ]


def test_a_folder_exported_before_checksums_cannot_be_verified(copy):
    body = json.loads((copy / FILENAME).read_text())
    body.update(version=2, files={})
    (copy / FILENAME).write_text(json.dumps(body))
    run = verify(copy)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == f"error: {copy} records no checksums (manifest version 2); re-export it to verify it\n"
