"""The timed workloads of the encoder-decoder part, on the same engine interface and in the same shape as
workloads.py (`once` and `summarize`, run by interleave.py: `warmup` untimed runs, then `repeats` timed ones).

Rows are sources (token ids, `</s>` included); an engine returns exactly `new_tokens` decoder ids per row, the
decoder start token left out:
(1) translate: greedy, one source: wall time (encoder included), time to first token, and decode tokens/s over the
    steps after the first ((n - 1) / (last token time - first token time));
(2) beam: the same source, `beams` beams: wall time;  (3) batch: `batch_size` sources of different lengths,
right-padded with an attention mask, greedy: new tokens/s.
`agreement` (greedy ids of a few sources, compared with PyTorch's by the suite) runs once and is not timed.
"""

from __future__ import annotations

from .workloads import Workload, batch_figures, greedy_figures, stats, timed_generate, timed_greedy

TRANSLATE = Workload(
    once=lambda engine, i, s: timed_greedy(engine, i["source"], s["new_tokens"]),
    summarize=lambda runs, i, s: {"source_tokens": len(i["source"]), **greedy_figures(runs, s["new_tokens"])},
)
BEAM = Workload(
    once=lambda engine, i, s: timed_generate(engine, [i["source"]], s["new_tokens"], beams=s["beams"]),
    summarize=lambda runs, i, s: {"beams": s["beams"], "new_tokens": s["new_tokens"], "seconds": stats(runs)},
    needs="beam_search",
)
BATCH = Workload(
    once=lambda engine, i, s: timed_generate(engine, i["batch"], s["new_tokens"]),
    summarize=lambda runs, i, s: {"source_tokens": [len(r) for r in i["batch"]],
                                  **batch_figures(runs, len(i["batch"]), s["new_tokens"])},  # fmt: skip
    needs="batching",
)
AGREEMENT = Workload(
    once=lambda engine, i, s: [engine.generate([source], s["new_tokens"])[0] for source in i["agreement"]],
    summarize=lambda runs, i, s: {"continuations": runs[0]},
    repeated=False,
)
SPEED = {"translate": TRANSLATE, "beam": BEAM, "batch": BATCH}
WORKLOADS = {**SPEED, "agreement": AGREEMENT}
