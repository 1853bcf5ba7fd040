"""Tiny random causal LMs and a tokenizer built in code, saved as Hugging Face folders, for offline tests.

Each builder writes a folder that `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`
load with no network: config + random weights (fixed torch seed), a ByteLevel BPE tokenizer trained here
on a small corpus (so multibyte text round-trips), and a `generation_config.json`. Models are 2 layers,
hidden 32-64; exporting one takes seconds. This file only builds models; it does not export them.
"""

from __future__ import annotations

from pathlib import Path

# Special tokens sit at fixed ids so tests can name them exactly.
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2
IM_END = "<|im_end|>"  # a second end-of-turn token: the Llama generation config lists it as an extra EOS
IM_END_ID = 3
VOCAB_SIZE = 384  # tokenizer vocabulary; the models' embedding is this size too

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}" + IM_END + "\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! How are you today? I am fine, thank you.",
    "Once upon a time there was a small model that lived in a folder.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024.",
    "Café, naïve, résumé, über, 東京, 😀 — multibyte text must round-trip.",
    "user: hi\nassistant: hello there\n",
    "def main():\n    return 0\n",
]


def build_tokenizer(add_bos: bool = True):
    """A ByteLevel BPE PreTrainedTokenizerFast of VOCAB_SIZE tokens; prepends BOS when `add_bos`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS, PAD, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if tok.get_vocab_size() != VOCAB_SIZE or tok.token_to_id(IM_END) != IM_END_ID:
        raise RuntimeError(f"tiny tokenizer came out with {tok.get_vocab_size()} tokens, expected {VOCAB_SIZE}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_END],
        chat_template=CHAT_TEMPLATE,
    )


def _save(model, tokenizer, generation_config, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config = generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_llama(folder: Path, tied: bool = False, seed: int = 0) -> Path:
    """Llama with GQA (4 heads, 2 KV heads, head size 16), 2 layers; EOS ids [1, 3]; tied head if `tied`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(config).eval()
    gen = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=[EOS_ID, IM_END_ID], pad_token_id=PAD_ID, max_new_tokens=32
    )
    return _save(model, build_tokenizer(add_bos=True), gen, folder)


def build_tiny_qwen2(folder: Path, seed: int = 1) -> Path:
    """Qwen2 (q/k/v biases) with GQA (4 heads, 2 KV heads, head size 16), 2 layers, no BOS added; EOS id 3."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=BOS_ID,
        eos_token_id=IM_END_ID,
        tie_word_embeddings=True,
        use_sliding_window=False,
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # random init leaves biases at 0; give them values so the test covers them
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.1)
    gen = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=IM_END_ID, pad_token_id=PAD_ID, max_new_tokens=16)
    return _save(model, build_tokenizer(add_bos=False), gen, folder)


def build_tiny_gpt2(folder: Path, seed: int = 2) -> Path:
    """GPT-2 (4 heads, head size 8; tied head), 2 layers, context 128, no BOS added; EOS id 1."""
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    model = GPT2LMHeadModel(config).eval()
    gen = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    return _save(model, build_tokenizer(add_bos=False), gen, folder)
