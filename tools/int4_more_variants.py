"""int4 variants of an int4 folder for docs/int4-quality.md: symmetric codes, and calibration on real text.

    .venv/bin/python tools/int4_more_variants.py --real-text IDS.npy --tokenizer FOLDER
    .venv/bin/python tools/int4_more_variants.py --fp32 FP32 --base INT4 --text IDS.npy --work DIR NAME=OPTIONS ...

`--real-text` writes 32 rows of 128 tokens (the first one the calibration's start token) cut evenly from real
text on this machine that none of the three perplexity texts is drawn from: Python's own pydoc pages of twelve
standard modules and the READMEs under /usr/share/doc (licenses and vim's left out).

Each variant is a copy of INT4 whose MatMulNBits weights are re-quantized from FP32's weights in blocks of 32;
OPTIONS is a comma list of `layers=searched|symmetric` (searched: the export's importance-weighted search, with
a zero point per block; symmetric: no zero-point input, MatMulNBits' implicit 8, the scale searched the same
way) and `head=keep|gptq|symmetric` (keep INT4's; GPTQ on the Gram matrix of the head's input over the text, as
the export rounds it; symmetric, unweighted). The statistics (each layer input's mean square, the head input's
Gram matrix) are measured on IDS.npy by running FP32's graph as the export's calibration does, and cached in
DIR/stats-<IDS name>.npz. Nothing is validated here.
"""

from __future__ import annotations

import argparse
import gzip
import pydoc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from export import blockwise  # noqa: E402
from export.draft_calibration import _run, _session_with_inputs  # noqa: E402
from export.gptq import gptq  # noqa: E402
from export.graph_spec import DecoderGraph  # noqa: E402
from memgpt_runtime.manifest import read_manifest  # noqa: E402
from tools.variant_folder import write_variant  # noqa: E402

MODULES = ("json", "collections", "argparse", "pathlib", "itertools", "functools", "subprocess", "datetime", "re")
MODULES += ("logging", "shutil", "random")
HEAD_INPUT, BLOCK = "final_norm/out", 32
SHRINKS = (1.0, 0.97, 0.94, 0.91, 0.88, 0.85, 0.8)  # fractions of the step that maps the block's extreme to -8 or 7


def real_text_ids(out: Path, tokenizer: Path, rows: int = 32, length: int = 128) -> None:
    parts = [pydoc.render_doc(name, renderer=pydoc.plaintext)[:6000] for name in MODULES]
    for path in sorted(Path("/usr/share/doc").glob("*/README*"))[:40]:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        text = data.decode("utf-8", "replace")
        if "GNU GENERAL PUBLIC" not in text and "vim" not in str(path).lower():
            parts.append(text[:4000])
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tokenizer / "tokenizer.json")).encode("\n\n".join(parts)).ids
    starts = np.linspace(0, len(ids) - length, rows).astype(int)
    text = np.stack([np.array(ids[s : s + length], np.int64) for s in starts])
    text[:, 0] = 0  # the start token the export's sampled calibration text begins with
    np.save(out, text)
    print(f"{out}: {rows} x {length} tokens from {len(parts)} documents ({len(ids)} tokens)")


def statistics(fp32: Path, tensors: list[str], text: Path, work: Path) -> dict[str, np.ndarray]:
    """{tensor: mean square per channel} for the layers' inputs and the head input's whole Gram matrix."""
    cache = work / f"stats-{text.stem}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    link = work / "fp32-draft"  # the calibration graph is written beside the draft: not into FP32
    link.mkdir(parents=True, exist_ok=True)
    if not (link / "model.onnx").exists():
        (link / "model.onnx").symlink_to((fp32 / "model.onnx").resolve())
    manifest = read_manifest(fp32, check_files=False)
    session = _session_with_inputs(link / "model.onnx", tensors)
    decoder = DecoderGraph(manifest.graph, manifest.kv_cache, manifest.vocab_size)
    stats = _run(session, decoder, np.load(text), tensors, {HEAD_INPUT}, None)  # diagonals but the head input's
    np.savez(cache, **stats)
    return stats


def symmetric(w: np.ndarray, importance: np.ndarray | None) -> blockwise.Blockwise:
    """Codes 0..15 read as code - 8 (no zero-point input), each block's scale searched for the least weighted error."""
    blocks = blockwise._blocks(np.asarray(w, np.float32), BLOCK)  # (N, k_blocks, 32)
    weights = np.broadcast_to(blockwise._block_weights(importance, w.shape[1], BLOCK), blocks.shape)
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
    best_error = np.full(blocks.shape[:2], np.inf, np.float32)
    best = np.zeros(blocks.shape[:2], np.float32)
    for first in (extreme / -8.0, extreme / 7.0):
        for shrink in SHRINKS:
            step = np.where(first == 0, 1e-8, first * shrink)
            for _ in range(3):  # least-squares step for the codes it picks
                codes = np.clip(np.rint(blocks / step[..., None]), -8, 7)
                norm = (weights * codes * codes).sum(-1)
                fitted = (weights * blocks * codes).sum(-1) / np.maximum(norm, 1e-30)
                step = np.where((norm > 0) & (fitted != 0), fitted, step)
            codes = np.clip(np.rint(blocks / step[..., None]), -8, 7)
            error = (weights * (blocks - step[..., None] * codes) ** 2).sum(-1)
            better = error < best_error
            best_error, best = np.where(better, error, best_error), np.where(better, step, best)
    codes = np.clip(np.rint(blocks / best[..., None]), -8, 7) + 8
    return blockwise.pack(codes, best, np.full(best.shape, 8.0), 4, BLOCK, w.shape[1])


def variant(fp32: Path, base: Path, stats: dict[str, np.ndarray], out: Path, options: dict[str, str]) -> None:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(base / "model.onnx"))
    floats = {t.name: t for t in onnx.load(str(fp32 / "model.onnx")).graph.initializer}
    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        head = node.input[0] == HEAD_INPUT
        how = options.get("head" if head else "layers", "keep" if head else "searched")
        if how == "keep":
            continue
        prefix = node.input[1]
        w = numpy_helper.to_array(floats["embed_tokens.weight" if head else prefix.removesuffix("_Q4")])
        w = w if head else w.T  # (N, K)
        if how == "gptq":
            q = gptq(w, stats[HEAD_INPUT], 4, BLOCK)
        elif how == "symmetric":
            q = symmetric(w, None if head else stats[node.input[0]])
        else:
            q = blockwise.quantize(w, 4, BLOCK, "searched", stats[node.input[0]])
        arrays = {prefix: q.packed, f"{prefix}_scales": q.scales, f"{prefix}_zero_points": q.zero_points}
        for name, array in arrays.items():
            if how == "symmetric" and name.endswith("_zero_points"):
                continue
            inits[name].CopyFrom(numpy_helper.from_array(array, name))
        if how == "symmetric" and len(node.input) > 3:
            del node.input[3:]
        for attribute in node.attribute:
            if attribute.name == "block_size":
                attribute.i = BLOCK
    write_variant(proto, base, out)
    print(f"{out}: {options}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", metavar="NAME=OPTIONS")
    parser.add_argument("--real-text", type=Path, help="write the real-text token ids here, and stop")
    parser.add_argument("--tokenizer", type=Path, help="a folder with tokenizer.json (for --real-text)")
    parser.add_argument("--fp32", type=Path)
    parser.add_argument("--base", type=Path)
    parser.add_argument("--text", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.real_text:
        real_text_ids(args.real_text, args.tokenizer)
        return
    import onnx

    proto = onnx.load(str(args.base / "model.onnx"), load_external_data=False)
    tensors = sorted({n.input[0] for n in proto.graph.node if n.op_type == "MatMulNBits"})
    stats = statistics(args.fp32, tensors, args.text, args.work)
    for spec in args.variants:
        name, _, text = spec.partition("=")
        options = dict(part.split("=", 1) for part in text.split(",") if part)
        variant(args.fp32, args.base, stats, args.work / name, options)


if __name__ == "__main__":
    main()
