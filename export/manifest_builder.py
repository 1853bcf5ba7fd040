"""Fill the runtime's Manifest from the loaded model, the exported graph(s), quantization and validation.

Every architecture detail is resolved here so the runtime never needs transformers: special token ids
(from the generation config, which is right where a GGUF tokenizer's are not; for encoder-decoder models
also the decoder start token), the chat template, the generation defaults the model's
`generation_config.json` explicitly sets, and where the model came from. An encoder-decoder manifest has kind
"encoder-decoder" and names its encoder graph. It does not decide the numbers themselves (architectures.py,
onnx_graph.py, seq2seq_graph.py and the validators do).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from memgpt_runtime.config import GenerationConfig as RuntimeGenerationConfig
from memgpt_runtime.errors import ExportError, MemgptError
from memgpt_runtime.manifest import EncoderSpec, Manifest, TokenSpec

from .architectures import ModelShape
from .graph_spec import DecoderGraph
from .sources import LoadedModel


def build_manifest(
    loaded: LoadedModel,
    shape: ModelShape,
    decoder: DecoderGraph,
    model_file: str,
    tokenizer_file: str,
    quantization: dict[str, Any],
    validation: dict[str, Any],
    encoder: EncoderSpec | None = None,
) -> Manifest:
    """The manifest of a decoder-only export, or of an encoder-decoder one when `encoder` is given."""
    return Manifest(
        model_file=model_file,
        tokenizer_file=tokenizer_file,
        architecture=loaded.config.model_type,
        vocab_size=decoder.vocab_size,
        context_length=shape.context_length,
        graph=decoder.graph,
        kv_cache=decoder.kv_cache,
        tokens=token_spec(loaded, encoder_decoder=encoder is not None),
        chat_template=chat_template(loaded.tokenizer),
        generation_defaults=generation_defaults(loaded.generation_config),
        quantization=quantization,
        source=source_description(loaded),
        validation=validation,
        kind="decoder-only" if encoder is None else "encoder-decoder",
        encoder=encoder,
    )


def token_spec(loaded: LoadedModel, encoder_decoder: bool = False) -> TokenSpec:
    """BOS/EOS/pad (and decoder start) ids: the generation config first, then the model config (never the GGUF tokenizer's)."""
    gen, config = loaded.generation_config, loaded.config

    def pick(name: str) -> Any:
        value = getattr(gen, name, None)
        return value if value is not None else getattr(config, name, None)

    eos = pick("eos_token_id")
    eos_ids = [] if eos is None else [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
    if not eos_ids:
        raise ExportError(
            "the model declares no EOS token id (generation_config.json or config.json); add one and retry"
        )
    bos, pad = pick("bos_token_id"), pick("pad_token_id")
    start = pick("decoder_start_token_id")
    start = bos if start is None else start  # as transformers generate() falls back to BOS
    if encoder_decoder and start is None:
        raise ExportError(
            "the model declares no decoder_start_token_id nor bos_token_id (generation_config.json or config.json); "
            "add one and retry"
        )
    return TokenSpec(
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=eos_ids,
        pad_token_id=None if pad is None else int(pad),
        decoder_start_token_id=int(start) if encoder_decoder else None,
    )


def chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the runtime renders only the default one
        template = template.get("default")
    return template if isinstance(template, str) and template else None


def generation_defaults(gen: Any) -> dict[str, Any]:
    """Keys the model's generation config sets explicitly that the runtime's GenerationConfig knows."""
    known = {f.name for f in fields(RuntimeGenerationConfig)}
    explicit = gen.to_diff_dict()  # only values that differ from transformers' defaults, e.g. no max_length=20
    defaults = {k: v for k, v in explicit.items() if k in known and v is not None}
    if "eos_token_id" in defaults and not isinstance(defaults["eos_token_id"], list):
        defaults["eos_token_id"] = [defaults["eos_token_id"]]
    try:
        RuntimeGenerationConfig.from_defaults(defaults)
    except MemgptError as exc:
        raise ExportError(
            f"the model's generation_config.json is unusable by the runtime ({exc}); fix it and retry"
        ) from None
    return defaults


def source_description(loaded: LoadedModel) -> dict[str, Any]:
    import transformers

    return {
        **loaded.source.describe(),
        "model_type": loaded.config.model_type,
        "transformers_version": transformers.__version__,
    }
