"""onnxruntime-genai on a folder built by its own model builder (fp32, int8 or int4), token ids in and out.

Threads go through a config overlay on the decoder's session options. genai builds the attention mask of a
left-padded batch from the pad id, so the overlay also sets a pad id that no prompt contains (SmolLM2 pads
with <|im_end|>, which every chat prompt contains).
"""

from __future__ import annotations

import json

import numpy as np


def import_modules() -> None:
    import onnxruntime_genai  # noqa: F401


def load(spec: dict) -> GenaiEngine:
    import onnxruntime_genai as og

    config = og.Config(spec["folder"])
    session = {"intra_op_num_threads": spec["threads"], "inter_op_num_threads": 1}
    config.overlay(
        json.dumps({"model": {"pad_token_id": spec["free_pad_id"], "decoder": {"session_options": session}}})
    )
    return GenaiEngine(og, og.Model(config), spec["free_pad_id"])


class GenaiEngine:
    beam_search = True
    batching = True

    def __init__(self, og, model, pad_id: int):
        self.og, self.model, self.pad_id = og, model, pad_id

    def _generator(self, batch: int, total: int, min_total: int, beams: int = 1):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(
            do_sample=False,
            max_length=total,
            min_length=min_total,
            num_beams=beams,
            num_return_sequences=1,
            batch_size=batch,
            early_stopping=False,
        )
        return self.og.Generator(self.model, params)

    def generate(self, rows, new_tokens: int, beams: int = 1, on_token=None) -> list[list[int]]:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, np.int32)  # (batch, width), left-padded
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = row
        total = width + new_tokens
        generator = self._generator(len(rows), total, total, beams)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
            if on_token:
                on_token()
        return [list(map(int, generator.get_sequence(i)[width:total])) for i in range(len(rows))]

    def nll(self, ids: list[int]) -> np.ndarray:
        """Append the text one token at a time and read the last position's logits after each."""
        generator = self._generator(1, len(ids), 0)
        out = np.empty(len(ids) - 1)
        for i in range(len(ids) - 1):
            generator.append_tokens(np.array([[ids[i]]], np.int32))
            logits = np.asarray(generator.get_logits(), np.float64).reshape(-1)  # (vocab,)
            top = logits.max()
            out[i] = top + np.log(np.exp(logits - top).sum()) - logits[ids[i + 1]]
        return out
