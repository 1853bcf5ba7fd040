"""The timed workloads of the encoder-decoder part, on the same engine interface and in the same shape as
workloads.py (`Workload`s with `once` and `summarize`, run by interleave.py: `warmup` untimed runs, then
`repeats` timed ones).

Rows are sources (token ids, `</s>` included); an engine returns exactly `new_tokens` decoder ids per row, the
decoder start token left out:
(1) translate: greedy, one source: wall time (encoder included), time to first token, and decode tokens/s over the
    steps after the first ((n - 1) / (last token time - first token time));
(2) beam: the same source, `beams` beams: wall time;  (3) batch: `batch_size` sources of different lengths,
right-padded with an attention mask, greedy: new tokens/s.
`agreement` (greedy ids of a few sources, compared with PyTorch's by the suite) runs once and is not timed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .workloads import Batch, Beam, Greedy, Workload


@dataclass(frozen=True)
class Agreement(Workload):
    """The greedy ids of settings[new] tokens for each source of inputs[sources], once, untimed."""

    sources: str
    new: str
    repeated: ClassVar[bool] = False

    def once(self, engine, inputs: dict, settings: dict) -> list[list[int]]:
        return [engine.generate([source], settings[self.new])[0] for source in inputs[self.sources]]

    def summarize(self, runs: list, inputs: dict, settings: dict) -> dict:
        return {"continuations": runs[0]}


SPEED: dict[str, Workload] = {
    "translate": Greedy("source", "new_tokens", "source_tokens"),
    "beam": Beam("source", "new_tokens"),
    "batch": Batch("batch", "new_tokens", lengths="source_tokens"),
}
WORKLOADS: dict[str, Workload] = {**SPEED, "agreement": Agreement("agreement", "new_tokens")}
