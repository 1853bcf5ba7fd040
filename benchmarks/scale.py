"""Export at scale: time, peak memory and folder size of `memgpt export` per precision, and decode speed against
PyTorch, on random-weight checkpoints of real shapes.

    python -m benchmarks.scale --work /tmp/scale --shapes smollm2-360m,llama-3.2-1b --precisions fp32,int8,int4
    python -m benchmarks.scale --work /tmp/scale --shapes llama-3.2-1b --precisions int4 --code /tmp/baseline

Checkpoints: each shape is the config.json of a public checkpoint (SmolLM2-360M, Qwen2.5-0.5B, Llama-3.2-1B,
Llama-3-8B) with random weights (normal, std 0.02; norms at 1), written tensor by tensor in bf16 into safetensors
shards of at most SHARD_BYTES (writing the 8B one holds a shard in memory, not the model), with a small byte-level
BPE tokenizer trained here (its ids are a prefix of the model's vocabulary; only the shapes matter to timings).
Exports: each in a fresh process (`--code DIR` puts another checkout first on its path: the export of an earlier
commit, on the same checkpoint); its wall time and CPU time, its peak RSS (VmHWM, which the process reads itself
as it ends: `ru_maxrss` would carry the parent's over fork + exec), the folder's size and the load average.
Decode: a 16-token prompt, then `--tokens` greedy tokens with EOS off, one warm-up and `--repeats` timed runs
(median), `--threads` threads for every engine, each engine in its own process (model load is not timed);
PyTorch runs the bf16 checkpoint in bf16 and, if its fp32 copy fits in half of this machine's memory, in fp32
too; the ratio is against the faster. Results go to `<work>/scale.json` (merged with earlier runs) and are
printed as a Markdown table. Nothing here is imported by the export or the runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHARD_BYTES = 2 * 2**30
TOKENIZER_VOCAB = 1000

_LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
}
SHAPES: dict[str, dict] = {
    "smollm2-360m": {
        **_LLAMA,
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_act": "silu",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
    },
    "llama-3.2-1b": {
        **_LLAMA,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
    },
    "llama-3-8b": {
        **_LLAMA,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
    },
}


def parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight of a Llama/Qwen2 checkpoint with this config, in the file's order."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head = config.get("head_dim") or hidden // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config["vocab_size"], hidden)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * head, hidden),
            p + "self_attn.k_proj.weight": (kv * head, hidden),
            p + "self_attn.v_proj.weight": (kv * head, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * head),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        }
        if config["model_type"] == "qwen2":
            shapes |= {
                p + f"self_attn.{n}_proj.bias": (s,)
                for n, s in (("q", heads * head), ("k", kv * head), ("v", kv * head))
            }
    shapes["model.norm.weight"] = (hidden,)
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (config["vocab_size"], hidden)
    return shapes


def parameter_count(config: dict) -> int:
    total = 0
    for shape in parameter_shapes(config).values():
        count = 1
        for d in shape:
            count *= d
        total += count
    return total


def write_checkpoint(shape: str, folder: Path, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """Write the random checkpoint `shape` (a key of SHAPES) in `dtype` into `folder`; returns the folder."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    config = {**SHAPES[shape], "torch_dtype": dtype}
    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(seed)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    names = parameter_shapes(config)
    index: dict[str, str] = {}
    files: list[str] = []

    def flush() -> None:
        nonlocal size
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(shards[-1], str(folder / name), metadata={"format": "pt"})
        files.append(name)
        index.update({key: name for key in shards[-1]})
        shards[-1] = {}
        size = 0

    for name, dims in names.items():
        if name.endswith("norm.weight"):
            tensor = torch.ones(dims, dtype=torch_dtype)
        else:
            tensor = (torch.randn(dims, generator=generator) * 0.02).to(torch_dtype)
        if size and size + tensor.numel() * tensor.element_size() > SHARD_BYTES:
            flush()
        shards[-1][name] = tensor
        size += tensor.numel() * tensor.element_size()
    flush()
    total = sum((folder / f).stat().st_size for f in files)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": index})
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}))
    _tokenizer().save_pretrained(folder)
    return folder


def _tokenizer():
    """A byte-level BPE of TOKENIZER_VOCAB tokens trained on the benchmark text, <s> 0 and </s> 1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = (Path(__file__).parent / "data" / "english.txt").read_text(encoding="utf-8").splitlines()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


PROMPT = list(range(100, 116))  # 16 ids below every shape's vocabulary
EXPORT = """
import sys
from export import export_model
export_model(sys.argv[1], output=sys.argv[2], quantize=sys.argv[3], force=True)
status = open("/proc/self/status").read().split("VmHWM:")[1].split()
print("VmHWM", int(status[0]) * 1024)  # bytes: this process's peak resident memory
"""
DECODE = """
import json, statistics, sys, time
engine, path, tokens, repeats, threads, prompt = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
if engine == "memgpt":
    import memgpt_runtime as mr
    lm = mr.load(path, threads=threads)
    run = lambda: lm.generate([prompt], max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
else:
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, engine)).eval()
    ids = torch.tensor([prompt])
    def run():
        with torch.no_grad():
            return model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
run()
times = []
for _ in range(repeats):
    start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
print(json.dumps({"tokens_per_s": tokens / statistics.median(times), "times": times}))
"""


def measure_export(checkpoint: Path, output: Path, precision: str, code: Path | None) -> dict:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    argv = [sys.executable, "-c", EXPORT, str(checkpoint), str(output), precision]
    start, load, cpu = time.perf_counter(), os.getloadavg()[0], _children_cpu()
    # subtle: `python -c` puts the working directory first on sys.path; run where no checkout shadows `--code`
    process = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=output.parent)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if process.returncode != 0:
        return {"error": process.stderr.strip().splitlines()[-1] if process.stderr.strip() else "failed"}
    peak = int(process.stdout.split("VmHWM")[-1].split()[0])
    size = sum(f.stat().st_size for f in output.iterdir() if f.is_file())
    steps = [line for line in process.stderr.splitlines() if " done (" in line]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_gb": peak / 2**30,
        "folder_gb": size / 2**30,
        "steps": steps,
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }


def _children_cpu() -> float:
    """User + system CPU seconds of the finished children: what an export cost, whatever else ran beside it."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_decode(engine: str, path: Path, tokens: int, repeats: int, threads: int) -> dict:
    argv = [
        sys.executable,
        "-c",
        DECODE,
        engine,
        str(path),
        str(tokens),
        str(repeats),
        str(threads),
        json.dumps(PROMPT),
    ]
    process = subprocess.run(argv, capture_output=True, text=True)
    if process.returncode != 0:
        return {"error": (process.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(process.stdout.strip().splitlines()[-1])


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for checkpoints, exports and scale.json")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--precisions", default="fp32,int8,int4")
    parser.add_argument(
        "--code", type=Path, help="export with the checkout in this folder instead (e.g. an earlier commit)"
    )
    parser.add_argument("--label", help="name of this code in the results (default: 'this' or the --code folder)")
    parser.add_argument("--no-decode", action="store_true", help="time exports only")
    parser.add_argument(
        "--decode-only",
        type=int,
        metavar="ROUNDS",
        help="no export: decode the folders already in --work against PyTorch, alternated, for ROUNDS rounds",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep every exported folder (default: only each shape's last)"
    )
    parser.add_argument(
        "--pytorch",
        default="auto",
        help="PyTorch dtypes to decode with, e.g. bfloat16 (auto: bf16, and fp32 if it fits in half the memory)",
    )
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    label = args.label or ("this" if args.code is None else args.code.name)
    results_path = args.work / "scale.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for shape in args.shapes.split(","):
        checkpoint = write_checkpoint(shape, args.work / shape / "hf")
        entry = results.setdefault(shape, {"parameters": parameter_count(SHAPES[shape]), "exports": {}, "decode": {}})
        if args.decode_only:
            folders = [args.work / shape / f"{label}-{p}" for p in args.precisions.split(",")]
            engines = pytorch_engines(entry, args.pytorch)
            entry["decode_rounds"] = decode_rounds(folders, checkpoint, engines, args)
            results_path.write_text(json.dumps(results, indent=2))
            continue
        for precision in args.precisions.split(","):
            output = args.work / shape / f"{label}-{precision}"
            print(f"{shape} {label} {precision}: exporting", file=sys.stderr, flush=True)
            figures = measure_export(checkpoint, output, precision, args.code)
            entry["exports"][f"{label}/{precision}"] = figures
            print(f"  {figures}", file=sys.stderr, flush=True)
            if not args.no_decode and "error" not in figures:
                entry["decode"][f"memgpt {precision}"] = measure_decode(
                    "memgpt", output, args.tokens, args.repeats, args.threads
                )
                print(f"  decode {entry['decode'][f'memgpt {precision}']}", file=sys.stderr, flush=True)
            results_path.write_text(json.dumps(results, indent=2))
            if not args.keep and precision != args.precisions.split(",")[-1] and output.is_dir():
                shutil.rmtree(output)
        if not args.no_decode:
            for engine in pytorch_engines(entry, args.pytorch):
                entry["decode"][f"pytorch {engine}"] = measure_decode(
                    engine, checkpoint, args.tokens, args.repeats, args.threads
                )
                print(f"  decode pytorch {engine} {entry['decode'][f'pytorch {engine}']}", file=sys.stderr, flush=True)
        results_path.write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


def pytorch_engines(entry: dict, choice: str) -> list[str]:
    """PyTorch dtypes to decode with: `choice`, or bf16 and fp32 when fp32 fits in half of this machine's memory."""
    if choice != "auto":
        return [e for e in choice.split(",") if e]
    return ["bfloat16"] + (["float32"] if entry["parameters"] * 4 < physical_memory() / 2 else [])


def decode_rounds(folders: list[Path], checkpoint: Path, engines: list[str], args: argparse.Namespace) -> list[dict]:
    """Each round decodes every memgpt folder, then every PyTorch dtype, one after the other; a round's ratio is
    memgpt's speed over the faster PyTorch of the same round, so the machine's drift between rounds cancels."""
    rounds = []
    for number in range(args.decode_only):
        speeds = {}
        for name, engine, path in [
            *(("memgpt " + f.name, "memgpt", f) for f in folders),
            *(("pytorch " + e, e, checkpoint) for e in engines),
        ]:
            load = os.getloadavg()[0]
            figures = measure_decode(engine, path, args.tokens, args.repeats, args.threads)
            speeds[name] = {**figures, "load_before": load}
            print(f"  round {number + 1} {name}: {figures}", file=sys.stderr, flush=True)
        best = max((v.get("tokens_per_s", 0) for k, v in speeds.items() if k.startswith("pytorch")), default=0)
        for name, figures in speeds.items():
            if name.startswith("memgpt") and best and "tokens_per_s" in figures:
                figures["vs_pytorch"] = figures["tokens_per_s"] / best
                print(f"  round {number + 1} {name}: {figures['vs_pytorch']:.2f}x PyTorch", file=sys.stderr)
        rounds.append(speeds)
    return rounds


def table(results: dict) -> str:
    """The results as Markdown: one row per shape and export, decode ratios against the faster PyTorch."""
    lines = [
        "| shape | parameters | code/precision | export, s (CPU s) | peak RSS, GB | folder, GB | load avg | decode, tok/s | vs PyTorch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, entry in results.items():
        torch_speeds = [
            d["tokens_per_s"] for k, d in entry["decode"].items() if k.startswith("pytorch") and "tokens_per_s" in d
        ]
        best = max(torch_speeds) if torch_speeds else None
        for key, figures in entry["exports"].items():
            decode = entry["decode"].get(f"memgpt {key.split('/')[-1]}", {}) if key.startswith("this/") else {}
            speed = decode.get("tokens_per_s")
            cells = [
                shape,
                f"{entry['parameters'] / 1e9:.2f}B",
                key,
                f"{figures['seconds']:.0f} ({figures.get('cpu_seconds', 0):.0f})"
                if "seconds" in figures
                else figures.get("error", ""),
                f"{figures.get('peak_rss_gb', 0):.2f}",
                f"{figures.get('folder_gb', 0):.2f}",
                f"{figures['load_before']:.1f}-{figures['load_after']:.1f}" if "load_before" in figures else "",
                f"{speed:.2f}" if speed else "",
                f"{speed / best:.1f}x" if speed and best else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        for key, decode in entry["decode"].items():
            if key.startswith("pytorch") and "tokens_per_s" in decode:
                lines.append(f"| {shape} | | {key} | | | | | {decode['tokens_per_s']:.2f} | 1.0x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
