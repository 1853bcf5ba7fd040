"""Counters and histograms of the server, written in Prometheus' text format (version 0.0.4) for `GET /metrics`.

A few dozen lines instead of a dependency: the server updates them from the event loop only, so no lock is needed.
Names follow Prometheus' conventions (`_total` counters, `_seconds` histograms); vLLM's and llama.cpp's servers
export the same quantities (requests running and waiting, tokens, time to first token, latency).
"""

from __future__ import annotations

import bisect
from collections import defaultdict

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out += [f"{name}_sum {self.sum!r}", f"{name}_count {running}"]
        return out


class Metrics:
    def __init__(self):
        self.requests = defaultdict(int)  # (route, status code) -> count
        self.finished = defaultdict(int)  # finish reason (stop, length, cancelled, error) -> choices
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.e2e = Histogram(LATENCY_BUCKETS)
        self.ttft = Histogram(LATENCY_BUCKETS)
        self.per_token = Histogram(TOKEN_GAP_BUCKETS)

    def request_done(self, route: str, status: int) -> None:
        self.requests[(route, status)] += 1

    def generation_done(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        reasons: list[str],
        submitted: float,
        first_token: float | None,
        finished: float,
    ) -> None:
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += completion_tokens
        for reason in reasons:
            self.finished[reason] += 1
        self.e2e.observe(finished - submitted)
        if first_token is not None:
            self.ttft.observe(first_token - submitted)
            if completion_tokens > 1:
                self.per_token.observe((finished - first_token) / (completion_tokens - 1))

    def render(self, running: int, waiting: int, loaded: bool) -> str:
        lines = [
            "# HELP memgpt_model_loaded 1 once the model is loaded and the server answers.",
            "# TYPE memgpt_model_loaded gauge",
            f"memgpt_model_loaded {int(loaded)}",
            "# HELP memgpt_requests_running Requests holding KV slots in the engine.",
            "# TYPE memgpt_requests_running gauge",
            f"memgpt_requests_running {running}",
            "# HELP memgpt_requests_waiting Requests queued for KV slots.",
            "# TYPE memgpt_requests_waiting gauge",
            f"memgpt_requests_waiting {waiting}",
            "# HELP memgpt_prompt_tokens_total Prompt tokens of finished generations.",
            "# TYPE memgpt_prompt_tokens_total counter",
            f"memgpt_prompt_tokens_total {self.prompt_tokens}",
            "# HELP memgpt_generation_tokens_total Tokens generated (as counted in usage).",
            "# TYPE memgpt_generation_tokens_total counter",
            f"memgpt_generation_tokens_total {self.generation_tokens}",
            "# HELP memgpt_choices_finished_total Choices by finish reason (stop, length, cancelled, error).",
            "# TYPE memgpt_choices_finished_total counter",
            *(f'memgpt_choices_finished_total{{reason="{r}"}} {c}' for r, c in sorted(self.finished.items())),
            "# HELP memgpt_http_requests_total HTTP requests by route and status code.",
            "# TYPE memgpt_http_requests_total counter",
            *(
                f'memgpt_http_requests_total{{route="{r}",code="{s}"}} {c}'
                for (r, s), c in sorted(self.requests.items())
            ),
            "# HELP memgpt_request_duration_seconds Time from submit to the last token of a generation.",
            "# TYPE memgpt_request_duration_seconds histogram",
            *self.e2e.lines("memgpt_request_duration_seconds"),
            "# HELP memgpt_time_to_first_token_seconds Time from submit to the first token.",
            "# TYPE memgpt_time_to_first_token_seconds histogram",
            *self.ttft.lines("memgpt_time_to_first_token_seconds"),
            "# HELP memgpt_time_per_output_token_seconds Mean gap between a generation's tokens after the first.",
            "# TYPE memgpt_time_per_output_token_seconds histogram",
            *self.per_token.lines("memgpt_time_per_output_token_seconds"),
        ]
        return "\n".join(lines) + "\n"
