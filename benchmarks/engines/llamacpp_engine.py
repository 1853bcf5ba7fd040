"""llama.cpp through llama-cpp-python, token ids in and out, on a GGUF file: the default model's own (Q4_1
weights) or llama.cpp's Q4_0 requantization of it (`benchmarks/llamacpp_quantize.py`), its fastest format here.

Greedy decoding is a loop over `Llama.eval` with an argmax over the last position's logits (read with the
low-level `llama_get_logits`, as `Llama.scores` is only filled with logits_all=True) and end of sequence banned; llama-cpp-python has no beam search and no batched generation, so (c) and (d) are n/a.
"""

from __future__ import annotations

import numpy as np


def import_modules() -> None:
    import llama_cpp  # noqa: F401


def load(spec: dict) -> LlamaCppEngine:
    from llama_cpp import Llama

    quality = spec.get("job") == "quality"  # perplexity needs the logits of every position
    llm = Llama(
        model_path=spec["gguf"],
        n_ctx=spec["context"],
        n_threads=spec["threads"],
        n_threads_batch=spec["threads"],
        n_batch=512,
        logits_all=quality,
        verbose=False,
    )
    return LlamaCppEngine(llm, spec["eos_ids"])


def _last_logits(llm) -> np.ndarray:
    """(vocab,) logits of the last evaluated position, copied."""
    import llama_cpp

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),)).copy()


class LlamaCppEngine:
    beam_search = False
    batching = False

    def __init__(self, llm, eos_ids: list[int]):
        self.llm, self.eos_ids = llm, list(eos_ids)

    def generate(self, rows, new_tokens: int, beams: int = 1, on_token=None) -> list[list[int]]:
        if beams != 1 or len(rows) != 1:
            raise ValueError("llama-cpp-python has no beam search or batched generation")
        llm = self.llm
        llm.reset()
        llm.eval(list(rows[0]))
        out: list[int] = []
        while True:
            logits = _last_logits(llm)  # (vocab,)
            logits[self.eos_ids] = -np.inf
            token = int(logits.argmax())
            out.append(token)
            if on_token:
                on_token()
            if len(out) == new_tokens:
                return [out]
            llm.eval([token])

    def nll(self, ids: list[int]) -> np.ndarray:
        llm = self.llm
        llm.reset()
        llm.eval(list(ids))
        logits = np.asarray(llm.scores[: len(ids) - 1], np.float64)  # (len - 1, vocab)
        top = logits.max(axis=1)
        lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        return lse - logits[np.arange(len(ids) - 1), ids[1:]]
