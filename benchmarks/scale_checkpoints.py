"""Write random-weight Hugging Face checkpoints at the shapes of real models, for the export-at-scale benchmark.

Each shape is the config.json of a public checkpoint (SmolLM2-360M, Qwen2.5-0.5B, Llama-3.2-1B, Llama-3-8B)
with its weights drawn at random (normal, std 0.02; norms at 1) and written tensor by tensor into safetensors
shards of at most SHARD_BYTES, so that writing an 8B checkpoint holds one shard in memory, not the model. The
tokenizer is a small byte-level BPE trained here (its ids are a prefix of the model's vocabulary, which the
export accepts: only the model's shapes matter to the timings). It does not export or time anything (scale.py does).
"""

from __future__ import annotations

import json
from pathlib import Path

SHARD_BYTES = 2 * 2**30
TOKENIZER_VOCAB = 1000

_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "rms_norm_eps": 1e-5,
          "attention_bias": False, "mlp_bias": False, "bos_token_id": 0, "eos_token_id": 1}  # fmt: skip
SHAPES: dict[str, dict] = {
    "smollm2-360m": {**_LLAMA, "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 15, "num_key_value_heads": 5, "vocab_size": 49152,
                     "max_position_embeddings": 8192, "rope_theta": 100000.0, "tie_word_embeddings": True},
    "qwen2.5-0.5b": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu",
                     "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                     "tie_word_embeddings": True, "use_sliding_window": False, "bos_token_id": 0, "eos_token_id": 1},
    "llama-3.2-1b": {**_LLAMA, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
                     "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": True,
                     "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                      "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
    "llama-3-8b": {**_LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                   "max_position_embeddings": 8192, "rope_theta": 500000.0, "tie_word_embeddings": False},
}  # fmt: skip


def parameter_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight of a Llama/Qwen2 checkpoint with this config, in the file's order."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head = config.get("head_dim") or hidden // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config["vocab_size"], hidden)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (hidden,), p + "self_attn.q_proj.weight": (heads * head, hidden),
                   p + "self_attn.k_proj.weight": (kv * head, hidden), p + "self_attn.v_proj.weight": (kv * head, hidden),
                   p + "self_attn.o_proj.weight": (hidden, heads * head), p + "post_attention_layernorm.weight": (hidden,),
                   p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                   p + "mlp.down_proj.weight": (hidden, inter)}  # fmt: skip
        if config["model_type"] == "qwen2":
            shapes |= {p + f"self_attn.{n}_proj.bias": (s,) for n, s in (("q", heads * head), ("k", kv * head), ("v", kv * head))}
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

    def flush(last: bool) -> None:
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
            flush(last=False)
        shards[-1][name] = tensor
        size += tensor.numel() * tensor.element_size()
    flush(last=True)
    total = sum((folder / f).stat().st_size for f in files)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": index}))
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
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
