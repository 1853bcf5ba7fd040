"""memgpt-runtime through its public `lm.generate`; perplexity through `lm.logits` (memgpt_runtime/perplexity.py).

Works for decoder-only and encoder-decoder folders alike: `lm.generate` pads prompts on the left and sources on
the right (with the attention mask), and `lm.new_tokens` cuts off the prompt or the decoder start token.

Imports only memgpt_runtime (onnxruntime, numpy, tokenizers), so the worker's memory is the runtime's own.
"""

from __future__ import annotations

import numpy as np


def import_modules() -> None:
    import memgpt_runtime  # noqa: F401


def load(spec: dict) -> MemgptEngine:
    import memgpt_runtime as mr

    return MemgptEngine(mr.load(spec["folder"], threads=spec["threads"]))


class MemgptEngine:
    beam_search = True
    batching = True

    def __init__(self, lm):
        self.lm = lm

    def generate(self, rows, new_tokens: int, beams: int = 1, on_token=None) -> list[list[int]]:
        from memgpt_runtime import Done

        steps = self.lm.generate_steps(
            [list(r) for r in rows],
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            num_beams=beams,
            do_sample=False,
        )
        for event in steps:
            if isinstance(event, Done):
                out = event.result.sequences
            elif on_token and event.tokens is not None:  # greedy: one call per new token
                on_token()
        return self.lm.new_tokens(out, max(len(r) for r in rows)).tolist()

    def nll(self, ids: list[int]) -> np.ndarray:
        """Each id's -log p given every id before it: `memgpt perplexity` with one window over the whole text
        (`lm.logits`: one run of the graph, or its steps for a folder whose graph gathers one position)."""
        from memgpt_runtime.perplexity import token_nll

        return token_nll(self.lm.logits(ids)[0, :-1], np.array(ids[1:]))  # position t predicts t + 1
