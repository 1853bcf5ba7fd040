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

from .workloads import Workload, batch_workload, beam_workload, greedy_workload

TRANSLATE = greedy_workload("source", "new_tokens", "source_tokens")
BEAM = beam_workload("source", "new_tokens")
BATCH = batch_workload("batch", "new_tokens", lengths="source_tokens")
AGREEMENT = Workload(
    once=lambda engine, i, s: [engine.generate([source], s["new_tokens"])[0] for source in i["agreement"]],
    summarize=lambda runs, i, s: {"continuations": runs[0]},
    repeated=False,
)
SPEED = {"translate": TRANSLATE, "beam": BEAM, "batch": BATCH}
WORKLOADS = {**SPEED, "agreement": AGREEMENT}
