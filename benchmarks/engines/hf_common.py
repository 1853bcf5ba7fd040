"""Generation and perplexity through transformers' `GenerationMixin`, shared by the PyTorch and optimum engines.

Prompts come as token ids; batches are left-padded here with the model's pad id and an explicit attention
mask, as a transformers user would. `on_token` rides on a streamer, whose first `put` is the prompt.
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

    def _inputs(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, np.int64)  # (batch, width), left-padded
        mask = np.zeros((len(rows), width), np.int64)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = row
            mask[i, width - len(row):] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask), width

    def generate(self, rows, new_tokens: int, beams: int = 1, on_token=None) -> list[list[int]]:
        import torch

        ids, mask, width = self._inputs(rows)
        streamer = _Streamer(on_token) if on_token else None
        with torch.inference_mode():
            out = self.model.generate(
                ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                num_beams=beams, pad_token_id=self.pad_id, streamer=streamer,
            )  # fmt: skip
        return out[:, width:].tolist()

    def nll(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.tensor([ids])
            logits = self.model(x, attention_mask=torch.ones_like(x), use_cache=False).logits[0, :-1].float()  # (len - 1, vocab)
            logp = torch.log_softmax(logits, dim=-1)
            return -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy().astype(np.float64)
