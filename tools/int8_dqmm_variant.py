"""int8 through onnxruntime's DynamicQuantizeMatMul instead of 8-bit MatMulNBits: one node timed, and a whole folder.

    .venv/bin/python tools/int8_dqmm_variant.py micro [--rounds 10]
    .venv/bin/python tools/int8_dqmm_variant.py folder INT8_FOLDER OUT [--bits 7]

`micro` times, alternating, one 8-bit MatMulNBits (blocks of 64, zero points, accuracy level 4: the int8 scheme's
node) against one DynamicQuantizeMatMul (the input quantized to uint8 per tensor at run time, int8 weights with a
scale per output channel) of SmolLM2's gate|up and down shapes, at 1 and 256 rows. `folder` writes a copy of an
int8 export whose every 8-bit MatMulNBits is a DynamicQuantizeMatMul over the same weights (dequantized, then
rounded per output channel, symmetric, to `--bits` bits: 7 keeps the AVX2 u8 x s8 products from saturating their
16-bit sums, which 8-bit weights do). docs/quantization.md ("int8") has what they measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from export import blockwise  # noqa: E402
from memgpt_runtime.session import make_session_options  # noqa: E402
from tools.variant_folder import write_variant  # noqa: E402


def per_channel(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) int8 codes and (N,) scales of a (N, K) weight, symmetric per output channel."""
    top = 2 ** (bits - 1) - 1
    scale = np.abs(w).max(axis=1) / top
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.ascontiguousarray(np.clip(np.rint(w / scale[:, None]), -top, top).astype(np.int8).T), scale


def one_node_session(k: int, n: int, kind: str):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if kind == "nbits8":
        blocks = k // 64
        inits = [
            numpy_helper.from_array(rng.integers(0, 256, (n, blocks, 64), dtype=np.uint8), "B"),
            numpy_helper.from_array(rng.random((n, blocks), dtype=np.float32) * 0.01, "scales"),
            numpy_helper.from_array(rng.integers(0, 256, (n, blocks), dtype=np.uint8), "zeros"),
        ]
        attributes = {"K": k, "N": n, "bits": 8, "block_size": 64, "accuracy_level": 4}
        node = helper.make_node(
            "MatMulNBits", ["x", "B", "scales", "zeros"], ["y"], domain="com.microsoft", **attributes
        )
    else:
        codes, scale = per_channel(rng.standard_normal((n, k)).astype(np.float32), 7)
        inits = [numpy_helper.from_array(codes, "B"), numpy_helper.from_array(scale, "scales")]
        node = helper.make_node("DynamicQuantizeMatMul", ["x", "B", "scales"], ["y"], domain="com.microsoft")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    return ort.InferenceSession(model.SerializeToString(), make_session_options(2), providers=["CPUExecutionProvider"])


def micro(rounds: int) -> None:
    rng = np.random.default_rng(1)
    for name, (k, n) in {"gate|up": (576, 3072), "down": (1536, 576)}.items():
        for rows in (1, 256):
            sessions = {kind: one_node_session(k, n, kind) for kind in ("nbits8", "dqmm")}
            x = rng.random((rows, k), dtype=np.float32)
            runs = 200 if rows == 1 else 10
            times = {kind: [] for kind in sessions}
            for session in sessions.values():
                for _ in range(5):
                    session.run(None, {"x": x})
            for r in range(rounds):
                for kind in list(sessions) if r % 2 == 0 else list(reversed(sessions)):
                    start = time.perf_counter()
                    for _ in range(runs):
                        sessions[kind].run(None, {"x": x})
                    times[kind].append((time.perf_counter() - start) / runs * 1e6)
            ratio = np.median(np.array(times["dqmm"]) / np.array(times["nbits8"]))
            medians = ", ".join(f"{kind} {np.median(t):.1f} us" for kind, t in times.items())
            print(f"{name} {k}x{n}, {rows} rows: {medians}; DynamicQuantizeMatMul / MatMulNBits {ratio:.3f}")


def folder(source: Path, out: Path, bits: int) -> None:
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(source / "model.onnx"))
    inits = {t.name: t for t in proto.graph.initializer}
    nodes = []
    for node in proto.graph.node:
        if node.op_type != "MatMulNBits":
            nodes.append(node)
            continue
        a = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        if a["bits"] != 8:
            raise SystemExit(f"{node.name} is {a['bits']}-bit: give an int8 export")
        n, k, block = a["N"], a["K"], a["block_size"]
        scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, -1)
        zeros = numpy_helper.to_array(inits[node.input[3]]).reshape(n, -1) if len(node.input) > 3 else None
        packed = numpy_helper.to_array(inits[node.input[1]]).reshape(n, -1, block)
        weight = blockwise.Blockwise(
            8, block, n, k, packed, scales, zeros if zeros is not None else np.full(scales.shape, 128, np.uint8)
        ).dequantize()
        codes, scale = per_channel(weight, bits)
        name = f"{node.input[1]}_per_channel"
        proto.graph.initializer.extend(
            [numpy_helper.from_array(codes, name), numpy_helper.from_array(scale, f"{name}_scale")]
        )
        nodes.append(
            helper.make_node(
                "DynamicQuantizeMatMul",
                [node.input[0], name, f"{name}_scale"],
                list(node.output),
                name=f"{node.name}_dq",
                domain="com.microsoft",
            )
        )
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    write_variant(proto, source, out)
    print(
        f"{out}: {sum(n.op_type == 'DynamicQuantizeMatMul' for n in nodes)} DynamicQuantizeMatMul nodes, {bits}-bit weights"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("micro", "folder"))
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--bits", type=int, default=7)
    args = parser.parse_args()
    if args.what == "micro":
        micro(args.rounds)
    else:
        folder(*args.paths, args.bits)


if __name__ == "__main__":
    main()
