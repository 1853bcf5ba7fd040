"""Time single MatMulNBits nodes (and the gguf minimum groups) at one row, in alternation, to see what a decode
step pays for each layout.

Usage: .venv/bin/python tools/nbits_node_micro.py [THREADS] [ROUNDS] [RUNS] [GROUP,...]
Each case is a one-graph session over random codes: a MatMulNBits of SmolLM2's shapes with a given width, block,
zero-point input and accuracy level, or a 4-bit block-32 MatMulNBits followed by one form of the minimum term (`gemm2d` on a (1, K) row, since
Gemm takes 2-D inputs only).
Rounds of RUNS (200) runs each, cases in alternating order; prints the median microseconds per run and the ratio to
the first case of each group.
"""

import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 15
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 200
ONLY = sys.argv[4].split(",") if len(sys.argv) > 4 else None


def nbits(name, x, out, k, n, bits, block, zp, acc, inits):
    kb = -(-k // block)
    blob = block * bits // 8
    inits.append(numpy_helper.from_array(rng.integers(0, 256, (n, kb, blob), dtype=np.uint8), f"{name}.w"))
    inits.append(numpy_helper.from_array(rng.random((n, kb), dtype=np.float32) * 0.01, f"{name}.s"))
    inputs = [x, f"{name}.w", f"{name}.s"]
    if zp:
        zb = kb if bits == 8 else -(-kb // 2)
        inits.append(numpy_helper.from_array(rng.integers(0, 256, (n, zb), dtype=np.uint8), f"{name}.z"))
        inputs.append(f"{name}.z")
    return helper.make_node(
        "MatMulNBits",
        inputs,
        [out],
        name=name,
        domain="com.microsoft",
        K=k,
        N=n,
        bits=bits,
        block_size=block,
        accuracy_level=acc,
    )


def session(k, build, rank=3):
    inits, nodes = [], []
    build(nodes, inits)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, k][3 - rank :])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def plain(k, n, bits, block, zp, acc=4):
    return session(k, lambda nodes, inits: nodes.append(nbits("m", "x", "y", k, n, bits, block, zp, acc, inits)))


def minimums(k, n, form, block=32):
    kb = k // block

    def build(nodes, inits):
        m = numpy_helper.from_array(rng.random((kb, n), dtype=np.float32), "mins")
        inits.append(m)
        if form == "split":  # today's: sums as extra columns, Split, MatMul, Add
            nodes.append(nbits("m", "x", "both", k, n + kb, 4, block, False, 4, inits))
            inits.append(numpy_helper.from_array(np.array([n, kb], np.int64), "sp"))
            nodes += [
                helper.make_node("Split", ["both", "sp"], ["c", "sums"], axis=-1),
                helper.make_node("MatMul", ["sums", "mins"], ["mm"]),
                helper.make_node("Add", ["c", "mm"], ["y"]),
            ]
        elif form == "reduce":  # sums by Reshape + ReduceSum of x
            nodes.append(nbits("m", "x", "c", k, n, 4, block, False, 4, inits))
            inits += [
                numpy_helper.from_array(np.array([0, 0, kb, block], np.int64), "bs"),
                numpy_helper.from_array(np.array([-1], np.int64), "ax"),
            ]
            nodes += [
                helper.make_node("Reshape", ["x", "bs"], ["xb"]),
                helper.make_node("ReduceSum", ["xb", "ax"], ["sums"], keepdims=0),
                helper.make_node("MatMul", ["sums", "mins"], ["mm"]),
                helper.make_node("Add", ["c", "mm"], ["y"]),
            ]
        elif form == "gemm2d":  # a 2-D row: Split, then Gemm(sums, minimums, C=codes) adds in the same node
            nodes.append(nbits("m", "x", "both", k, n + kb, 4, block, False, 4, inits))
            inits.append(numpy_helper.from_array(np.array([n, kb], np.int64), "sp"))
            nodes += [
                helper.make_node("Split", ["both", "sp"], ["c", "sums"], axis=-1),
                helper.make_node("Gemm", ["sums", "mins", "c"], ["y"]),
            ]
        elif form == "gemm3d":  # a (1, 1, K) row: Flatten in, Split, Gemm, Reshape out to a shape made once per graph
            nodes.append(helper.make_node("Flatten", ["x"], ["x2"], axis=-1))
            nodes.append(nbits("m", "x2", "both", k, n + kb, 4, block, False, 4, inits))
            inits += [
                numpy_helper.from_array(np.array([n, kb], np.int64), "sp"),
                numpy_helper.from_array(np.array([1, 1, n], np.int64), "out_shape"),
            ]
            nodes += [
                helper.make_node("Split", ["both", "sp"], ["c", "sums"], axis=-1),
                helper.make_node("Gemm", ["sums", "mins", "c"], ["y2"]),
                helper.make_node("Reshape", ["y2", "out_shape"], ["y"]),
            ]
        elif form == "none":  # the codes' product alone (wrong numbers: the bound)
            nodes.append(nbits("m", "x", "y", k, n, 4, block, False, 4, inits))

    return session(k, build, rank=2 if form == "gemm2d" else 3)


CASES = {
    "head": {
        "q8_0 8-bit b32 acc4 (gguf)": lambda: plain(576, 49152, 8, 32, False),
        "8-bit b32 acc1": lambda: plain(576, 49152, 8, 32, False, acc=1),
        "4-bit b32 zp acc4 (int4)": lambda: plain(576, 49152, 4, 32, True),
        "8-bit b64 zp acc4 (int8)": lambda: plain(576, 49152, 8, 64, True),
    },
    "gate_up": {
        "4-bit b64 zp (int4)": lambda: plain(576, 3072, 4, 64, True),
        "4-bit b32 no zp": lambda: plain(576, 3072, 4, 32, False),
        "b32 + minimums split (gguf)": lambda: minimums(576, 3072, "split"),
        "b32 + minimums reduce": lambda: minimums(576, 3072, "reduce"),
    },
    "down": {
        "4-bit b64 zp (int4)": lambda: plain(1536, 576, 4, 64, True),
        "4-bit b32 no zp": lambda: plain(1536, 576, 4, 32, False),
        "b32 + minimums split (gguf)": lambda: minimums(1536, 576, "split"),
        "b32 + minimums reduce": lambda: minimums(1536, 576, "reduce"),
    },
    # int4's layer weights: blocks of 64 (the scheme) against blocks of 32 (docs/int4-quality.md)
    "blocks_qkv": {
        "4-bit b64 zp": lambda: plain(576, 960, 4, 64, True),
        "4-bit b32 zp": lambda: plain(576, 960, 4, 32, True),
    },
    "blocks_o": {
        "4-bit b64 zp": lambda: plain(576, 576, 4, 64, True),
        "4-bit b32 zp": lambda: plain(576, 576, 4, 32, True),
    },
    "blocks_gate_up": {
        "4-bit b64 zp": lambda: plain(576, 3072, 4, 64, True),
        "4-bit b32 zp": lambda: plain(576, 3072, 4, 32, True),
    },
    "blocks_down": {
        "4-bit b64 zp": lambda: plain(1536, 576, 4, 64, True),
        "4-bit b32 zp": lambda: plain(1536, 576, 4, 32, True),
    },
    # the zero-point input's cost, each layer shape and the head (docs/quantization.md, "Zero points")
    **{
        f"zero_points_{name}": {
            "4-bit b32 zp": (lambda k=k, n=n: plain(k, n, 4, 32, True)),
            "4-bit b32 no zp": (lambda k=k, n=n: plain(k, n, 4, 32, False)),
        }
        for name, (k, n) in {
            "qkv": (576, 960),
            "o": (576, 576),
            "gate_up": (576, 3072),
            "down": (1536, 576),
            "head": (576, 49152),
        }.items()
    },
    "minimum_forms": {
        "down: split, MatMul, Add (gguf)": lambda: minimums(1536, 576, "split"),
        "down: split, Gemm (2-D)": lambda: minimums(1536, 576, "gemm2d"),
        "down: Flatten, split, Gemm, Reshape": lambda: minimums(1536, 576, "gemm3d"),
        "down: no minimums (bound)": lambda: minimums(1536, 576, "none"),
    },
}


def feed(s, x3):
    """x as the session's input rank wants it: (1, 1, K) or (1, K)."""
    return x3 if len(s.get_inputs()[0].shape) == 3 else x3[0]


def main():
    for group, cases in CASES.items():
        if ONLY and not any(group == g or group.startswith(g + "_") for g in ONLY):
            continue
        k = 1536 if group in ("down", "minimum_forms", "blocks_down", "zero_points_down") else 576
        sessions = {name: make() for name, make in cases.items()}
        x3 = rng.random((1, 1, k), dtype=np.float32)
        times = {name: [] for name in sessions}
        for s in sessions.values():
            for _ in range(20):
                s.run(None, {"x": feed(s, x3)})
        for r in range(ROUNDS):
            order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
            for name in order:
                s = sessions[name]
                start = time.perf_counter()
                x = feed(s, x3)
                for _ in range(RUNS):
                    s.run(None, {"x": x})
                times[name].append((time.perf_counter() - start) / RUNS * 1e6)
        first = next(iter(times))
        print(f"{group} ({THREADS} threads, {ROUNDS} rounds):")
        for name, t in times.items():
            ratio = np.median(np.array(t) / np.array(times[first]))
            print(f"  {name:32s} {np.median(t):8.1f} us   x{ratio:.3f}", flush=True)


if __name__ == "__main__":
    main()
