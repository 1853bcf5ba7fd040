"""Spec: the export streams: twice the layers at the same width grow its peak resident memory by well under 2x.

Two random bf16 checkpoints of the same width, 4 and 8 layers, are exported to int4 in a fresh process each
(its peak RSS as the kernel counted it), with the validation that large models get (the fp32 graph
and the int4 graph checked on a truncated copy, reference.py), which is what a model too large for a whole
PyTorch reference meets. A layer of fp32 weights is 45 MB here; an export holding the model in fp32 (as before
streaming, ~5x) would grow by hundreds of MB. What may grow with the model: the int8 draft graph that samples the
calibration text and the int4 graph being measured (a quarter and an eighth of the fp32 weights).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WIDTH = dict(hidden_size=1024, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=4, vocab_size=4096)
EXPORT = """
import sys
import export.reference as reference
reference.FULL_FP32_BYTES = 0  # validate as a large model does: truncated copies, no whole PyTorch model
reference.BF16_SHARE = 0.0
from export import export_model
from export.progress import Progress
export_model(sys.argv[1], output=sys.argv[2], quantize="int4", progress=Progress(quiet=True))
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])  # kB: this process's peak resident memory
"""


def _checkpoint(folder: Path, layers: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from benchmarks import tiny_models as tm

    torch.manual_seed(0)
    config = LlamaConfig(
        **WIDTH,
        num_hidden_layers=layers,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tm.BOS_ID,
        eos_token_id=tm.EOS_ID,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tm.build_tokenizer().save_pretrained(folder)
    return folder


def _peak_rss(checkpoint: Path, output: Path) -> int:
    """Peak resident bytes of a fresh process that exports `checkpoint` (its VmHWM as it ends; `ru_maxrss` would
    carry this test process's own peak over fork + exec)."""
    process = subprocess.run(
        [sys.executable, "-c", EXPORT, str(checkpoint), str(output)], capture_output=True, text=True
    )
    assert process.returncode == 0, process.stderr
    return int(process.stdout.split()[-1]) * 1024


@pytest.mark.slow
def test_peak_rss_grows_with_a_layer_not_with_the_model(tmp_path):
    small, large = _checkpoint(tmp_path / "l4", 4), _checkpoint(tmp_path / "l8", 8)
    peaks = [_peak_rss(folder, tmp_path / f"out-{folder.name}") for folder in (small, large)]
    layer = 2 * 1024 * 1024 + 2 * 1024 * 256 + 3 * 1024 * 2816  # q, o; k, v; gate, up, down
    added = 4 * 4 * layer  # fp32 bytes of the 4 added layers (180 MB)
    assert peaks[1] < 1.5 * peaks[0], peaks
    assert peaks[1] - peaks[0] < 0.5 * added, (peaks, added)
    manifest = json.loads((tmp_path / "out-l8" / "manifest.json").read_text())
    assert manifest["validation"]["fp32"]["truncated_layers"] == [0, 7]
    assert manifest["validation"]["int4"]["reference"] == "a truncated copy in PyTorch fp32"
