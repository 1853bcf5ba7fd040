"""Is a 16-bit KV cache free on this CPU? One GroupQueryAttention node of the default model's shape (9 query heads,
3 KV heads of 64) over a shared past, fp32 against fp16, timed in alternating rounds.

    python tools/kv16_ab.py [--rounds 10] [--threads 2]

The fp16 row is the attention alone; a real fp16 cache would add casts of q, k, v and the output in every layer.
"""

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

HEADS, KV_HEADS, HEAD = 9, 3, 64


def session(dtype, capacity: int, threads: int) -> ort.InferenceSession:
    t = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    shapes = {
        "q": ["b", "s", HEADS * HEAD],
        "k": ["b", "s", KV_HEADS * HEAD],
        "v": ["b", "s", KV_HEADS * HEAD],
        "past_k": ["b", KV_HEADS, capacity, HEAD],
        "past_v": ["b", KV_HEADS, capacity, HEAD],
    }
    inputs = [helper.make_tensor_value_info(n, t, s) for n, s in shapes.items()]
    inputs += [
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["b"]),
        helper.make_tensor_value_info("total", TensorProto.INT32, [1]),
    ]
    outputs = [helper.make_tensor_value_info(n, t, None) for n in ("out", "present_k", "present_v")]
    node = helper.make_node(
        "GroupQueryAttention",
        [i.name for i in inputs],
        [o.name for o in outputs],
        domain="com.microsoft",
        num_heads=HEADS,
        kv_num_heads=KV_HEADS,
    )
    graph = helper.make_graph([node], "gqa", inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def bound(dtype, rows: int, past: int, capacity: int, threads: int):
    """A session with its inputs bound; the present outputs write into the past buffers, as the runtime's do."""
    rng = np.random.default_rng(0)
    sess = session(dtype, capacity, threads)
    feeds = {
        "q": (rows, 1, HEADS * HEAD),
        "k": (rows, 1, KV_HEADS * HEAD),
        "v": (rows, 1, KV_HEADS * HEAD),
        "past_k": (rows, KV_HEADS, capacity, HEAD),
        "past_v": (rows, KV_HEADS, capacity, HEAD),
    }
    arrays = {n: rng.standard_normal(s).astype(dtype) for n, s in feeds.items()}
    arrays["seqlens_k"] = np.full(rows, past, np.int32)
    arrays["total"] = np.array([past + 1], np.int32)
    binding = sess.io_binding()
    for name, array in arrays.items():
        binding.bind_cpu_input(name, array)
    binding.bind_output("out")
    binding.bind_ortvalue_output("present_k", ort.OrtValue.ortvalue_from_numpy(arrays["past_k"]))
    binding.bind_ortvalue_output("present_v", ort.OrtValue.ortvalue_from_numpy(arrays["past_v"]))
    return sess, binding, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print("| rows | past | fp32 us | fp16 us | fp16 / fp32 |\n|---|---|---|---|---|")
    for rows, past in ((1, 128), (1, 1024), (8, 128), (8, 1024)):
        runs = {dt: bound(dt, rows, past, 2048, args.threads) for dt in (np.float32, np.float16)}
        times = {dt: [] for dt in runs}
        for r in range(args.rounds):
            for dt in (np.float32, np.float16) if r % 2 == 0 else (np.float16, np.float32):
                sess, binding, _ = runs[dt]
                start = time.perf_counter()
                for _ in range(20):
                    sess.run_with_iobinding(binding)
                times[dt].append((time.perf_counter() - start) / 20)
        full, half = statistics.median(times[np.float32]), statistics.median(times[np.float16])
        ratios = statistics.median(h / f for f, h in zip(times[np.float32], times[np.float16]))
        print(f"| {rows} | {past} | {full * 1e6:.0f} | {half * 1e6:.0f} | {ratios:.2f}x |")


if __name__ == "__main__":
    main()
