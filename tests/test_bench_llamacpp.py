"""Spec: the suite gives llama.cpp its fastest format too, Q4_0 requantized from the default model's Q4_1 file by
llama.cpp's own quantizer, once, into the suite's cache; a requantization that fails is one line naming its log,
and leaves no file behind."""

from __future__ import annotations

import pytest

from benchmarks import models, suite
from benchmarks.engines import by_name


def test_q4_1_is_the_shipped_file_and_q4_0_is_built_from_it_into_the_cache(tmp_path, monkeypatch):
    calls = []

    def requantize(source, target, kind, log):
        calls.append((source, target, kind))
        target.write_bytes(b"GGUF")
        return target

    monkeypatch.setattr(models, "requantize_gguf", requantize)
    shipped = models.default_gguf()
    q4_1 = suite._artifact(by_name("llama.cpp q4_1"), {"model": "default"}, tmp_path, tmp_path)
    q4_0 = suite._artifact(by_name("llama.cpp q4_0"), {"model": "default"}, tmp_path, tmp_path)
    assert q4_1 == {"gguf": str(shipped), "model_path": str(shipped)}
    assert q4_0 == {"gguf": str(tmp_path / "llamacpp-q4_0.gguf"), "model_path": str(tmp_path / "llamacpp-q4_0.gguf")}
    assert calls == [(shipped, tmp_path / "llamacpp-q4_0.gguf", "q4_0")]


def test_a_model_without_a_gguf_file_skips_both_formats(tmp_path):
    for name in ("llama.cpp q4_1", "llama.cpp q4_0"):
        with pytest.raises(suite.Skipped, match="no GGUF file for this model"):
            suite._artifact(by_name(name), {"model": "tiny"}, tmp_path, tmp_path)


def test_a_failed_requantization_is_a_build_error_and_leaves_no_file(tmp_path):
    source = tmp_path / "not-a-model.gguf"
    source.write_bytes(b"not a GGUF file")
    log = tmp_path / "quantize.log"
    with pytest.raises(models.BuildError, match=r"could not requantize not-a-model.gguf to q4_0 \(exit \d+\); see "):
        models.requantize_gguf(source, tmp_path / "out.gguf", "q4_0", log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-model.gguf", "quantize.log"]
