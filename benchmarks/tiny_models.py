"""Tiny random causal LMs and encoder-decoders, with tokenizers built in code, saved as HF folders, for offline tests
and `memgpt bench --quick`.

Each builder writes a folder that `AutoModelForCausalLM` (Llama, Qwen2, GPT-2) or `AutoModelForSeq2SeqLM` (T5,
BART, Marian) and `AutoTokenizer` load with no network: config + random weights (fixed torch seed), a tokenizer
trained here on a small corpus (ByteLevel BPE, so multibyte text round-trips; Unigram with SentencePiece's
"▁" for T5 and Marian), each family's special tokens where its real checkpoints have them, and a
`generation_config.json`. Models are 2 layers (2 + 2 for encoder-decoders), hidden 32-64; exporting one takes
seconds. This file only builds models; it does not export them.
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


# Encoder-decoder models: each family's special tokens sit where its real checkpoints put them.
T5_PAD_ID, T5_EOS_ID, T5_UNK_ID = 0, 1, 2  # T5: pad is also the decoder start token
BART_BOS_ID, BART_PAD_ID, BART_EOS_ID, BART_UNK_ID = 0, 1, 2, 3  # BART: decoder start = EOS
MARIAN_EOS_ID, MARIAN_UNK_ID, MARIAN_PAD_ID = 0, 1, 279  # Marian: pad = decoder start = the last id
UNIGRAM_SIZE = 280  # what SentencePiece makes of the corpus below (T5's and Marian's tokenizers)
SEQ2SEQ_INPUTS = ["input_ids", "attention_mask"]  # what their tokenizers return (no token_type_ids), as the real ones
T5_VOCAB_SIZE = 320  # T5's embedding is larger than its tokenizer (padding rows), as t5-small's 32128 > 32100

_SEQ2SEQ_CORPUS = _CORPUS + [
    "translate English to German: The house is wonderful.",
    "summarize: The tower is 324 metres tall, about the same height as an 81-storey building.",
    "Das Haus ist wunderbar. Ich habe keine Zeit.",
    "A small model translates short sentences; a larger one summarizes long articles.",
    "The weather is nice today, and the children are playing in the park near the river.",
    "Please translate this sentence into German before the meeting starts tomorrow morning.",
    "Researchers published a study showing that small models can summarize news articles well.",
    "She bought three apples, two oranges and a loaf of bread at the market on Saturday.",
    "Der Zug nach Berlin fährt um acht Uhr ab; bitte seien Sie pünktlich am Bahnhof.",
    "Wir haben gestern einen langen Spaziergang durch den Wald gemacht.",
    "Quarterly revenue grew by seven percent, while costs fell for the first time in years.",
    "Jupiter, the largest planet, has dozens of moons and a giant storm called the Great Red Spot.",
    "Kinder lernen schnell, wenn sie neugierig sind und genug Zeit zum Spielen haben.",
]


_GERMAN_CORPUS = [
    "Das Haus ist wunderbar. Ich habe keine Zeit.",
    "Die Straße ist lang, und der Garten hinter dem Haus ist groß.",
    "Guten Morgen! Wie geht es dir heute? Mir geht es gut, danke.",
    "Zahlen: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024.",
    "Über den Fluss fährt eine Fähre; die Brücke ist geschlossen.",
]


def _train_sentencepiece(lines: list[str], specials: list[str], vocab_size: int) -> bytes:
    """A SentencePiece Unigram model (serialized) with `specials` at ids 0.. in that order; deterministic."""
    import io

    import sentencepiece as spm

    ids = {
        name: specials.index(token) if token in specials else -1
        for name, token in (("pad_id", "<pad>"), ("eos_id", "</s>"), ("unk_id", "<unk>"))
    }
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
        **ids,
    )
    return model.getvalue()


def _unigram_tokenizer(specials: list[str], vocab_size: int = 320):
    """A Unigram tokenizer with SentencePiece's Metaspace ("▁") pre-tokenizer, as T5's and Marian's are.

    The pieces and scores come from SentencePiece's trainer (deterministic, unlike the `tokenizers` one)."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    sp = spm.SentencePieceProcessor(
        model_proto=_train_sentencepiece(_SEQ2SEQ_CORPUS + _GERMAN_CORPUS, specials, vocab_size)
    )
    pieces = [
        (sp.id_to_piece(i), 0.0 if sp.is_control(i) or sp.is_unknown(i) else sp.get_score(i))
        for i in range(sp.get_piece_size())
    ]
    tok = Tokenizer(models.Unigram(pieces, unk_id=specials.index("<unk>"), byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens(specials)
    return tok


def _check_size(tok, size: int) -> None:
    if tok.get_vocab_size() != size:
        raise RuntimeError(f"tiny tokenizer came out with {tok.get_vocab_size()} tokens, expected {size}")


def build_t5_tokenizer():
    """Unigram/Metaspace tokenizer: <pad> 0, </s> 1, <unk> 2; appends </s> like T5's."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _unigram_tokenizer(["<pad>", "</s>", "<unk>"])
    _check_size(tok, UNIGRAM_SIZE)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", T5_EOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_input_names=SEQ2SEQ_INPUTS
    )


def build_bart_tokenizer():
    """ByteLevel BPE like BART's: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last; wraps text in <s> ... </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - 1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_SEQ2SEQ_CORPUS * 4, trainer=trainer)
    tok.add_special_tokens(["<mask>"])
    _check_size(tok, VOCAB_SIZE)
    tok.post_processor = processors.RobertaProcessing(
        sep=("</s>", BART_EOS_ID), cls=("<s>", BART_BOS_ID), trim_offsets=False, add_prefix_space=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_input_names=SEQ2SEQ_INPUTS,
    )


def build_marian_sentencepiece_tokenizer(folder: Path):
    """What a real opus-mt checkpoint ships: SentencePiece `source.spm` and `target.spm` (German), trained here,
    and a joint `vocab.json` (</s> 0, <unk> 1, source pieces, target-only pieces, <pad> last).
    transformers has no fast version of this tokenizer; the export converts it."""
    import json

    import sentencepiece as spm
    from transformers import MarianTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pieces = ["</s>", "<unk>"]
    # as in real checkpoints, the source model knows every character (its corpus has German names and words too)
    for name, lines in (("source.spm", _SEQ2SEQ_CORPUS + _GERMAN_CORPUS), ("target.spm", _GERMAN_CORPUS)):
        model = _train_sentencepiece(lines, ["</s>", "<unk>"], 120)
        (folder / name).write_bytes(model)
        processor = spm.SentencePieceProcessor(model_proto=model)
        pieces += [p for p in map(processor.id_to_piece, range(processor.get_piece_size())) if p not in pieces]
    pieces.append("<pad>")
    (folder / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}, ensure_ascii=False))
    return MarianTokenizer(
        str(folder / "source.spm"),
        str(folder / "target.spm"),
        str(folder / "vocab.json"),
        source_lang="en",
        target_lang="de",
    )


def build_marian_tokenizer():
    """Unigram/Metaspace tokenizer: </s> 0, <unk> 1, ..., <pad> last; appends </s> like Marian's."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _unigram_tokenizer(["</s>", "<unk>"])
    tok.add_special_tokens(["<pad>"])
    _check_size(tok, UNIGRAM_SIZE)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", MARIAN_EOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_input_names=SEQ2SEQ_INPUTS
    )


def _randomize_biases(model, std: float = 0.1) -> None:
    """Random init leaves biases (and BART's final_logits_bias) at 0; give them values so tests cover them."""
    import torch

    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("bias"):
                tensor.normal_(0, std)


def build_tiny_t5(folder: Path, seed: int = 4) -> Path:
    """T5 (4 heads of size 8 in d_model 64: d_kv is not d_model / heads), 2 + 2 layers, relative positions, no biases."""
    import torch
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    tokenizer = build_t5_tokenizer()
    config = T5Config(
        vocab_size=T5_VOCAB_SIZE,
        d_model=64,
        d_kv=8,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="relu",
        pad_token_id=T5_PAD_ID,
        eos_token_id=T5_EOS_ID,
        decoder_start_token_id=T5_PAD_ID,
        tie_word_embeddings=True,
        initializer_factor=2.0,  # at 1.0 the untrained model predicts the same token after every source
    )
    model = T5ForConditionalGeneration(config).eval()
    gen = GenerationConfig(decoder_start_token_id=T5_PAD_ID, eos_token_id=T5_EOS_ID, pad_token_id=T5_PAD_ID)
    return _save(model, tokenizer, gen, folder)


def build_tiny_bart(folder: Path, seed: int = 7) -> Path:
    """BART (4 heads of size 16), 2 + 2 layers, learned positions up to 128, random biases; bart-large-cnn's options."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig

    torch.manual_seed(seed)
    tokenizer = build_bart_tokenizer()
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=128,
        bos_token_id=BART_BOS_ID,
        pad_token_id=BART_PAD_ID,
        eos_token_id=BART_EOS_ID,
        decoder_start_token_id=BART_EOS_ID,
        forced_eos_token_id=BART_EOS_ID,
        init_std=0.3,  # at 0.02 the untrained model predicts EOS after every source
    )
    model = BartForConditionalGeneration(config).eval()
    _randomize_biases(model)
    gen = GenerationConfig(  # facebook/bart-large-cnn's generation config, with small lengths
        bos_token_id=BART_BOS_ID,
        pad_token_id=BART_PAD_ID,
        eos_token_id=BART_EOS_ID,
        decoder_start_token_id=BART_EOS_ID,
        forced_bos_token_id=BART_BOS_ID,
        forced_eos_token_id=BART_EOS_ID,
        num_beams=4,
        length_penalty=2.0,
        no_repeat_ngram_size=3,
        early_stopping=True,
        min_length=4,
        max_length=24,
    )
    return _save(model, tokenizer, gen, folder)


def build_tiny_marian(folder: Path, seed: int = 8, sentencepiece: bool = False) -> Path:
    """Marian (4 heads of size 16), 2 + 2 layers, sinusoidal positions, swish, random biases; opus-mt's options.

    The tokenizer is a fast one (pad id MARIAN_PAD_ID), or with `sentencepiece` the slow SentencePiece files
    real opus-mt checkpoints ship (pad = the last id of their vocab.json)."""
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    tokenizer = build_marian_sentencepiece_tokenizer(folder) if sentencepiece else build_marian_tokenizer()
    pad = tokenizer.pad_token_id
    config = MarianConfig(
        vocab_size=len(tokenizer),
        decoder_vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=128,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=pad,
        eos_token_id=MARIAN_EOS_ID,
        decoder_start_token_id=pad,
        forced_eos_token_id=MARIAN_EOS_ID,
        init_std=0.3,  # at 0.02 the untrained model repeats one token whatever the source
    )
    model = MarianMTModel(config).eval()
    _randomize_biases(model)
    gen = GenerationConfig(  # Helsinki-NLP/opus-mt-*'s generation config, with a small max_length
        bos_token_id=MARIAN_EOS_ID,
        pad_token_id=pad,
        eos_token_id=MARIAN_EOS_ID,
        decoder_start_token_id=pad,
        forced_eos_token_id=MARIAN_EOS_ID,
        bad_words_ids=[[pad]],
        num_beams=4,
        max_length=32,
    )
    return _save(model, tokenizer, gen, folder)
