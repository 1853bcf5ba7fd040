"""memgpt-runtime through its public `lm.generate`; perplexity through the KV-cache protocol (prefill + step).

Works for decoder-only and encoder-decoder folders alike: `lm.generate` pads prompts on the left and sources on
the right (with the attention mask), and `lm.new_tokens` cuts off the prompt or the decoder start token.

Imports only memgpt_runtime (onnxruntime, numpy, tokenizers), so the worker's memory is the runtime's own.
"""

from __future__ import annotations

import numpy as np


def import_modules() -> None:
    import memgpt_runtime  # noqa: F401


def load(spec: dict) -> "MemgptEngine":
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
            [list(r) for r in rows], max_new_tokens=new_tokens, min_new_tokens=new_tokens, num_beams=beams,
            do_sample=False,
        )  # fmt: skip
        for event in steps:
            if isinstance(event, Done):
                out = event.result.sequences
            elif on_token and event.tokens is not None:  # greedy: one call per new token
                on_token()
        return self.lm.new_tokens(out, max(len(r) for r in rows)).tolist()

    def nll(self, ids: list[int]) -> np.ndarray:
        """Prefill the first token, then step through the text; each step's logits predict the next id."""
        state = self.lm.session.new_state(1, len(ids))
        logits = state.prefill(np.array([ids[:1]], np.int64), np.ones((1, 1), np.int64))  # (1, vocab)
        out = np.empty(len(ids) - 1)
        for i, target in enumerate(ids[1:]):
            out[i] = _nll(logits[0], target)
            if i < len(ids) - 2:  # the last id predicts nothing
                logits = state.step(np.array([target], np.int64))
        return out


def _nll(logits: np.ndarray, target: int) -> float:
    """-log softmax(logits)[target], in float64."""
    x = logits.astype(np.float64)
    top = x.max()
    return float(top + np.log(np.exp(x - top).sum()) - x[target])
