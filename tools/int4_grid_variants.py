"""Write grid-aware int4 variants (export/grid_int4.py) of an int4 folder for perplexity and decode comparisons.

Usage: .venv/bin/python tools/int4_grid_variants.py --fp32 FP32_FOLDER --base INT4_FOLDER --text IDS.npy
           --work DIR NAME=OPTIONS ...
OPTIONS is a comma list of key=value: grids=0|1 (on-grid blocks keep their scales and codes; else every block is
searched in blocks of 32, weighed by importance), joint=0|1 (zero points rounded jointly on the block sums' Gram
matrix), cov=0|1 (... on their covariance instead), bias=0|1 (the mean error into MatMulNBits' bias input),
damping=F, dense=1 (a finer candidate grid for the search), power=F (importance ** F), only=A|B (only
the layer weights whose names contain A or B; the others keep the base's codes), eight=A|B (those 8-bit
round-to-nearest), layers=base (the base's layer codes kept), head=8 (the LM head 8-bit round-to-nearest in blocks of 32
instead of the base's). Each variant is a copy of INT4_FOLDER (tokenizer, manifest, LM head and embeddings as
they are) whose layer MatMulNBits are re-quantized from FP32_FOLDER's weights in blocks of 32. The layer inputs'
statistics (the mean square and mean of each channel, the Gram matrix of the block sums) are measured once on
IDS.npy (rows, tokens; e.g. the calibration text `memgpt export --quantize int4` samples) by running
FP32_FOLDER's graph as the export's calibration does (draft_calibration.py), and cached in DIR/stats.npz.
Nothing is validated here.
"""

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from export import blockwise, grid_int4  # noqa: E402
from export.blockwise import quantize as quantize_weight  # noqa: E402
from export.draft_calibration import _run, _session_with_inputs  # noqa: E402
from export.graph_spec import DecoderGraph  # noqa: E402
from memgpt_runtime.integrity import record_files  # noqa: E402
from memgpt_runtime.manifest import read_manifest  # noqa: E402


def layer_nodes(proto) -> dict[str, str]:
    """MatMulNBits node -> the tensor it multiplies, for every node but the LM head's."""
    return {n.name: n.input[0] for n in proto.graph.node if n.op_type == "MatMulNBits" and "lm_head" not in n.name}


def statistics(fp32: Path, tensors: list[str], text: np.ndarray, work: Path) -> dict[str, np.ndarray]:
    """{tensor/importance, tensor/mean, tensor/sums_gram} over `text`, cached in work/stats.npz."""
    cache = work / "stats.npz"
    if cache.is_file():
        return dict(np.load(cache))
    link = work / "fp32-draft"  # the calibration graph is written next to the draft: not into FP32_FOLDER
    link.mkdir(exist_ok=True)
    if not (link / "model.onnx").exists():
        (link / "model.onnx").symlink_to((fp32 / "model.onnx").resolve())
    manifest = read_manifest(fp32, check_files=False)
    session = _session_with_inputs(link / "model.onnx", tensors)
    decoder = DecoderGraph(manifest.graph, manifest.kv_cache, manifest.vocab_size)
    means: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    grams = _run(session, decoder, text.copy(), tensors, set(tensors), None, means)
    print(f"statistics of {len(tensors)} inputs in {time.perf_counter() - start:.0f} s", flush=True)
    stats = {}
    for name in tensors:
        stats[f"{name}/importance"] = np.diag(grams[name]).copy()
        stats[f"{name}/mean"] = means[name]
        stats[f"{name}/sums_gram"] = grid_int4.block_sum_gram(grams[name])
    np.savez(cache, **stats)
    (link / "calibration.onnx").unlink(missing_ok=True)
    return stats


def variant(base: Path, fp32_proto, stats: dict[str, np.ndarray], out: Path, options: dict[str, str]) -> None:
    import onnx
    from onnx import helper, numpy_helper

    grid_int4.DAMPING = float(options.get("damping", grid_int4.DAMPING))
    if options.get("dense") == "1":  # a finer candidate grid for the searched blocks
        blockwise.SHRINKS = tuple(np.linspace(1.0, 0.7, 13))
        blockwise.SHIFTS = tuple(np.linspace(-0.5, 0.5, 9))
    power = float(options.get("power", 1.0))  # importance ** power: 1 as the export, 0 unweighted
    grids, joint, cov, bias = (options.get(key, "0") == "1" for key in ("grids", "joint", "cov", "bias"))
    proto = onnx.load(str(base / "model.onnx"))
    floats = {t.name: t for t in fp32_proto.graph.initializer}
    inits = {t.name: t for t in proto.graph.initializer}
    nodes = layer_nodes(proto)
    start = time.perf_counter()
    for node in proto.graph.node:
        if node.name not in nodes or options.get("layers") == "base":
            continue
        if "only" in options and not any(part in node.name for part in options["only"].split("|")):
            continue
        x, prefix = node.input[0], node.input[1]
        w = numpy_helper.to_array(floats[prefix.removesuffix("_Q4")]).T  # (N, K)
        sums_gram = None
        if joint or cov:
            sums_gram = stats[f"{x}/sums_gram"]
            if cov:
                mean_sums = stats[f"{x}/mean"].reshape(-1, grid_int4.GRID_BLOCK).sum(axis=1)
                sums_gram = sums_gram - np.outer(mean_sums, mean_sums)
        eight = "eight" in options and any(part in node.name for part in options["eight"].split("|"))
        if eight:  # 8-bit round-to-nearest in blocks of 32, as a GGUF Q8_0 tensor would be
            q, b = quantize_weight(w, 8, grid_int4.GRID_BLOCK, "rtn"), None
        else:
            q, b = grid_int4.quantize_on_grids(
                w, stats[f"{x}/importance"] ** power, sums_gram, stats[f"{x}/mean"] if bias else None, grids
            )
        for name, array in (
            (prefix, q.packed),
            (f"{prefix}_scales", q.scales),
            (f"{prefix}_zero_points", q.zero_points),
        ):
            inits[name].CopyFrom(numpy_helper.from_array(array, name))
        for attribute in node.attribute:
            if attribute.name == "block_size":
                attribute.CopyFrom(helper.make_attribute("block_size", grid_int4.GRID_BLOCK))
            if attribute.name == "bits":
                attribute.CopyFrom(helper.make_attribute("bits", q.bits))
        if b is not None:
            proto.graph.initializer.append(numpy_helper.from_array(b, f"{prefix}_bias"))
            node.input.extend(["", f"{prefix}_bias"])  # MatMulNBits' inputs 4 (g_idx, absent) and 5 (bias)
    if options.get("head") == "8":  # the tied LM head (a Q8_0 table in the GGUF file) 8-bit, blocks of 32
        head = next(n for n in proto.graph.node if n.op_type == "MatMulNBits" and "lm_head" in n.name)
        q = quantize_weight(numpy_helper.to_array(floats["embed_tokens.weight"]), 8, 32, "rtn")
        prefix = head.input[1]
        for name, array in (
            (prefix, q.packed),
            (f"{prefix}_scales", q.scales),
            (f"{prefix}_zero_points", q.zero_points),
        ):
            inits[name].CopyFrom(numpy_helper.from_array(array, name))
        for attribute in head.attribute:
            if attribute.name in ("bits", "block_size"):
                attribute.CopyFrom(helper.make_attribute(attribute.name, 8 if attribute.name == "bits" else 32))
    seconds = time.perf_counter() - start
    manifest = read_manifest(base, check_files=False)
    for file in base.iterdir():
        if file.name not in ("manifest.json", manifest.model_file):
            shutil.copy(file, out / file.name)
    onnx.save_model(proto, str(out / manifest.model_file))
    quantization = dict(manifest.quantization)
    if options.get("layers") != "base":
        quantization["block_size_by_node"] = {
            **quantization.get("block_size_by_node", {}),
            **{
                name.removesuffix("_Q4"): grid_int4.GRID_BLOCK
                for name in nodes
                if "only" not in options or any(part in name for part in options["only"].split("|"))
            },
        }
    quantization["algorithm"] = f"grid-aware 4-bit ({options}), GPTQ 4-bit head"
    replace(replace(manifest, quantization=quantization), files=record_files(out)).write(out)
    print(f"{out.name}: {len(nodes)} weights in {seconds:.0f} s", flush=True)


def main() -> None:
    import onnx

    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+", help="NAME=key=value,key=value")
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True, help="an int4 export of the same model")
    parser.add_argument("--text", type=Path, required=True, help="calibration token ids (rows, tokens), .npy")
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tensors = sorted(set(layer_nodes(onnx.load(str(args.base / "model.onnx"), load_external_data=False)).values()))
    stats = statistics(args.fp32, tensors, np.load(args.text), args.work)
    fp32_proto = onnx.load(str(args.fp32 / "model.onnx"))
    for spec in args.variants:
        name, _, rest = spec.partition("=")
        options = dict(item.split("=", 1) for item in rest.split(",") if item)
        out = args.work / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        variant(args.base, fp32_proto, stats, out, options)


if __name__ == "__main__":
    main()
