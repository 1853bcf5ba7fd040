"""A `DecoderState` over a transformers causal LM, so the numpy search can be checked against `model.generate()`.

Test helper only (torch lives in tests, never in memgpt_runtime). It feeds the model as transformers'
`prepare_inputs_for_generation` does: position ids from the mask's cumulative sum (-1, pads set to 1), the
full 2D mask, a `DynamicCache` reordered with `reorder_cache` (index_select on the batch axis).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

VOCAB = 128
torch.set_num_threads(1)  # tiny models: one thread is faster and does not fight the other test processes


def tiny_llama(seed: int = 0, vocab: int = VOCAB) -> LlamaForCausalLM:
    """A 2-layer, hidden-32 random Llama (4 heads, 2 KV heads) in eval mode, the same weights for the same seed."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        initializer_range=0.2,  # peaked, varied next-token distributions instead of near-uniform ones
    )
    return _without_generation_defaults(LlamaForCausalLM(config).eval())


def tiny_gpt2(seed: int = 0, vocab: int = VOCAB) -> GPT2LMHeadModel:
    """A 2-layer, hidden-32 random GPT-2 in eval mode."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.2,
    )
    return _without_generation_defaults(GPT2LMHeadModel(config).eval())


def _without_generation_defaults(model):
    """Clear the model's own EOS/pad/BOS defaults so every test states the ids it generates with."""
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    model.generation_config.bos_token_id = None
    return model


class TorchState:
    """Implements `memgpt_runtime.state.DecoderState` with a transformers model; counts select() calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (rows, seen_len) int64
        self.selects: list[np.ndarray] = []

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor, every: bool = False) -> np.ndarray:
        positions = self.mask.cumsum(-1) - 1
        positions.masked_fill_(self.mask == 0, 1)
        out = self.model(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions[:, -ids.shape[1] :],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.cache = out.past_key_values
        if every:
            return out.logits.to(torch.float32).numpy().copy()  # (rows, new, vocab)
        return out.logits[:, -1, :].to(torch.float32).numpy().copy()  # (rows, vocab)

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.cache = DynamicCache()
        self.mask = torch.from_numpy(np.asarray(attention_mask, dtype=np.int64))
        return self._forward(torch.from_numpy(np.asarray(input_ids, dtype=np.int64)))

    def step(self, tokens: np.ndarray) -> np.ndarray:
        self.mask = torch.cat([self.mask, torch.ones((self.mask.shape[0], 1), dtype=torch.int64)], dim=1)
        return self._forward(torch.from_numpy(np.asarray(tokens, dtype=np.int64))[:, None])

    def verify(self, tokens: np.ndarray) -> np.ndarray:
        rows, n = tokens.shape
        self.mask = torch.cat([self.mask, torch.ones((rows, n), dtype=torch.int64)], dim=1)
        return self._forward(torch.from_numpy(np.asarray(tokens, dtype=np.int64)), every=True)

    def rewind(self, count: int) -> None:
        self.cache.crop(self.cache.get_seq_length() - count)  # as `_assisted_decoding` drops rejected drafts
        self.mask = self.mask[:, :-count]

    def select(self, rows: np.ndarray) -> None:
        self.selects.append(np.asarray(rows).copy())
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        self.cache.reorder_cache(index)
        self.mask = self.mask.index_select(0, index)


@torch.no_grad()
def hf_generate(model: torch.nn.Module, input_ids: np.ndarray, attention_mask: np.ndarray, **options):
    """transformers `model.generate()` on numpy inputs -> (sequences int64, sequences_scores float32 or None)."""
    eos = options.pop("eos_token_id", ())
    out = model.generate(
        torch.from_numpy(np.asarray(input_ids, dtype=np.int64)),
        attention_mask=torch.from_numpy(np.asarray(attention_mask, dtype=np.int64)),
        eos_token_id=list(eos) if eos else None,
        return_dict_in_generate=True,
        output_scores=True,
        **options,
    )
    scores = getattr(out, "sequences_scores", None)
    return out.sequences.numpy(), None if scores is None else scores.numpy()


def left_pad(prompts: list[list[int]], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of different lengths -> (batch, longest) left-padded ids and their attention mask."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return ids, mask
