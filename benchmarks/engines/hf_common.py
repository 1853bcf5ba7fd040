"""Generation and perplexity through transformers' `GenerationMixin`, shared by the PyTorch and optimum engines.

Prompts come as token ids; batches are padded here with the model's pad id and an explicit attention mask,
as a transformers user would: on the left for a causal LM, on the right for an encoder-decoder's sources (whose
output starts with the decoder start token, cut off here). `on_token` rides on a streamer, whose first `put` is
the prompt (for an encoder-decoder, the decoder start token).
"""

from __future__ import annotations

import numpy as np


class _Streamer:
    """A transformers streamer that calls `on_token()` for each new token (the first `put` is the prompt)."""

    def __init__(self, on_token):
        self.on_token, self.seen_prompt = on_token, False

    def put(self, value) -> None:
        if self.seen_prompt:
            self.on_token()
        self.seen_prompt = True

    def end(self) -> None:
        pass


class HFGenerateEngine:
    beam_search = True
    batching = True

    def __init__(self, model, spec: dict):
        self.model = model
        self.pad_id = spec["pad_id"]
        self.encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))

    def _inputs(self, rows: list[list[int]]):
        """(ids, mask, width of the output's prompt part): left-padded prompts, or right-padded sources."""
        import torch

        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, np.int64)  # (batch, width)
        mask = np.zeros((len(rows), width), np.int64)
        for i, row in enumerate(rows):
            where = slice(0, len(row)) if self.encoder_decoder else slice(width - len(row), width)
            ids[i, where] = row
            mask[i, where] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask), 1 if self.encoder_decoder else width

    def generate(self, rows, new_tokens: int, beams: int = 1, on_token=None) -> list[list[int]]:
        import torch

        ids, mask, width = self._inputs(rows)
        streamer = _Streamer(on_token) if on_token else None
        with torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                num_beams=beams,
                pad_token_id=self.pad_id,
                streamer=streamer,
            )
        return out[:, width:].tolist()

    def nll(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.tensor([ids])
            logits = (
                self.model(x, attention_mask=torch.ones_like(x), use_cache=False).logits[0, :-1].float()
            )  # (len - 1, vocab)
            logp = torch.log_softmax(logits, dim=-1)
            return -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy().astype(np.float64)
