"""OpenAI's response objects: a whole chat completion or completion, its stream chunks, the logprobs of each.

The writers gather `generation.Delta`s per choice. Chat logprobs follow OpenAI's `{"content": [{token, logprob,
bytes, top_logprobs}]}`, completions the legacy `{tokens, token_logprobs, top_logprobs, text_offset}`. A chosen
token's `token` is the text it added to the answer, so the tokens joined equal the text (a token that ends inside
a multi-byte character adds nothing; the next one carries the character); the alternatives are each decoded alone.
"""

from __future__ import annotations

from . import protocol as p

LOGPROB_FLOOR = -9999.0  # JSON has no -inf; OpenAI reports impossible tokens this way


class Writer:
    def __init__(self, tokenizer, job: p.Job, meta: dict):
        self.tokenizer, self.job, self.meta = tokenizer, job, meta
        choices = len(job.prompts) * job.n
        self.texts = [""] * choices
        self.tokens: list[list] = [[] for _ in range(choices)]
        self.reasons: list[str | None] = [None] * choices

    def add(self, d) -> None:
        self.texts[d.index] += d.text
        self.tokens[d.index] += d.tokens
        if d.finish_reason:
            self.reasons[d.index] = d.finish_reason

    def _name(self, token) -> str:
        return f"token_id:{token.token_id}" if self.job.token_ids else token.text

    def _alternatives(self, token) -> list[tuple[str, float]]:
        out = []
        for tid, lp in token.top:
            if self.job.token_ids:
                name = f"token_id:{tid}"
            else:
                name = token.text if tid == token.token_id else self.tokenizer.decode([tid])
            out.append((name, max(lp, LOGPROB_FLOOR)))
        return out


class ChatWriter(Writer):
    def _logprobs(self, tokens) -> dict | None:
        if self.job.logprobs is None:
            return None
        content = []
        for t in tokens:
            top = [{"token": s, "logprob": lp, "bytes": list(s.encode())} for s, lp in self._alternatives(t)]
            name = self._name(t)
            content.append(
                {
                    "token": name,
                    "logprob": max(t.logprob, LOGPROB_FLOOR),
                    "bytes": list(name.encode()),
                    "top_logprobs": top,
                }
            )
        return {"content": content}

    def whole(self, usage: dict) -> dict:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": self._logprobs(self.tokens[i]),
                "finish_reason": self.reasons[i],
            }
            for i, text in enumerate(self.texts)
        ]
        return {**self.meta, "object": "chat.completion", "choices": choices, "usage": usage}

    def _chunk(self, choices: list[dict]) -> dict:
        chunk = {**self.meta, "object": "chat.completion.chunk", "choices": choices}
        if self.job.include_usage:
            chunk["usage"] = None
        return chunk

    def opening(self):
        for i in range(len(self.texts)):
            yield self._chunk(
                [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
            )

    def chunk(self, d) -> dict:
        delta = {"content": d.text} if d.text else {}
        return self._chunk(
            [
                {
                    "index": d.index,
                    "delta": delta,
                    "logprobs": self._logprobs(d.tokens) if d.tokens else None,
                    "finish_reason": d.finish_reason,
                }
            ]
        )

    def usage_chunk(self, usage: dict) -> dict:
        return {**self.meta, "object": "chat.completion.chunk", "choices": [], "usage": usage}


class CompletionWriter(Writer):
    def _echo(self, index: int) -> str:
        return self.job.echo_texts[index // self.job.n] if self.job.echo_texts else ""

    def _logprobs(self, index: int, tokens) -> dict | None:
        if self.job.logprobs is None:
            return None
        offset = len(self._echo(index))
        return {
            "tokens": [self._name(t) for t in tokens],
            "token_logprobs": [max(t.logprob, LOGPROB_FLOOR) for t in tokens],
            "top_logprobs": [dict(self._alternatives(t)) for t in tokens],
            "text_offset": [offset + t.start for t in tokens],
        }

    def whole(self, usage: dict) -> dict:
        choices = [
            {
                "index": i,
                "text": self._echo(i) + text,
                "logprobs": self._logprobs(i, self.tokens[i]),
                "finish_reason": self.reasons[i],
            }
            for i, text in enumerate(self.texts)
        ]
        return {**self.meta, "object": "text_completion", "choices": choices, "usage": usage}

    def _chunk(self, choices: list[dict]) -> dict:
        chunk = {**self.meta, "object": "text_completion", "choices": choices}
        if self.job.include_usage:
            chunk["usage"] = None
        return chunk

    def opening(self):
        for i in range(len(self.texts)):
            if self._echo(i):
                yield self._chunk([{"index": i, "text": self._echo(i), "logprobs": None, "finish_reason": None}])

    def chunk(self, d) -> dict:
        return self._chunk(
            [
                {
                    "index": d.index,
                    "text": d.text,
                    "logprobs": self._logprobs(d.index, d.tokens) if d.tokens else None,
                    "finish_reason": d.finish_reason,
                }
            ]
        )

    def usage_chunk(self, usage: dict) -> dict:
        return {**self.meta, "object": "text_completion", "choices": [], "usage": usage}
