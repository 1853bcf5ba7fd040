"""One choice's text as its tokens arrive: incremental detokenization, stop strings, the text held back while it
could still turn into a stop string, and which token produced which text (for logprobs).

Pure bookkeeping over a tokenizer, no HTTP and no engine, so it can be tested token by token. The rules follow
vllm-project/vllm `v1/engine/detokenizer.py`: a stop string is looked for only where the new text could complete
one; the text is cut where the stop string begins (the stop string itself never reaches the caller); while
generating, the last `max(len(stop)) - 1` characters are held back, since they could be the start of a stop string
that the next tokens complete. Streamed pieces joined therefore always equal the text of the whole answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..stream import TextStream


@dataclass
class TokenText:
    """One generated token: its id, the text it added to the answer (empty for a byte that completes no character
    yet; the token that completes it carries the character), where that text starts, and its logprobs."""

    token_id: int
    text: str
    start: int
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, logprob), most likely first


class ChoiceText:
    """Feed a choice's tokens with `push`; `take` returns what may be released to the caller so far."""

    def __init__(self, tokenizer, stop: list[str] | tuple[str, ...] = (), eos_ids=()):
        self._stream = TextStream(tokenizer)
        self.stop = [s for s in stop if s]
        self._eos = set(int(e) for e in eos_ids)
        self._holdback = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""  # the answer so far, cut at a stop string once one appears
        self.tokens: list[TokenText] = []  # every token that reached the text (an EOS never does)
        self.count = 0  # tokens generated for this choice, EOS and the token that completed a stop string included
        self.finish_reason: str | None = None  # "stop" (EOS or stop string) or "length"
        self._sent_chars = 0
        self._sent_tokens = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def push(self, token_id: int, logprob: float | None = None, top: list[tuple[int, float]] | None = None) -> None:
        """One more generated token (ignored once the choice finished)."""
        if self.finished:
            return
        self.count += 1
        if token_id in self._eos:
            self._flush()
            self.finish_reason = "stop"
            return
        start = len(self.text)
        piece = self._stream.push([token_id])
        self.text += piece
        self.tokens.append(TokenText(token_id, piece, start, logprob, top or []))
        if self.stop and piece:
            self._cut_at_stop(start)

    def end(self, reason: str = "length") -> None:
        """The generation ended without a stop (max tokens): release any text still held by the detokenizer."""
        if not self.finished:
            self._flush()
            self.finish_reason = reason

    def take(self) -> tuple[str, list[TokenText]]:
        """The text and tokens not yet released that may be released now (all of them once finished)."""
        limit = len(self.text) if self.finished else max(len(self.text) - self._holdback, self._sent_chars)
        piece = self.text[self._sent_chars : limit]
        self._sent_chars = limit
        ready = []
        for token in self.tokens[self._sent_tokens :]:
            # a token goes out with the last of its characters, or with the end of the answer
            if not self.finished and token.start + len(token.text) > limit:
                break
            ready.append(token)
        self._sent_tokens += len(ready)
        return piece, ready

    def _flush(self) -> None:
        tail = self._stream.flush()
        if tail:
            if self.tokens:
                self.tokens[-1].text += tail
            self.text += tail
            if self.stop:
                self._cut_at_stop(len(self.text) - len(tail))

    def _cut_at_stop(self, new_from: int) -> None:
        """Cut the text at the first stop string that the text from `new_from` on completes."""
        found = -1
        for s in self.stop:
            at = self.text.find(s, max(0, new_from - len(s) + 1))
            if at != -1 and (found == -1 or at < found):
                found = at
        if found != -1:
            self.text = self.text[:found]
            # the tokens whose text begins inside the answer stay, the one that ran into the stop string included
            self.tokens = [t for t in self.tokens if t.start < found]
            self.finish_reason = "stop"
