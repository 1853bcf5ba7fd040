"""`memgpt serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) on the continuous-batching engine.

Only `memgpt serve` imports this package (through the `memgpt.commands` entry point), so the runtime itself never
loads FastAPI. The parts: `protocol.py` (request bodies into engine options), `text.py` (a choice's text: stop
strings, held-back text, logprobs), `generation.py` (engine events into choice deltas), `app.py` (routes, auth,
limits, errors), `metrics.py` (Prometheus text), `cli.py` (the subcommand). Design: docs/server.md.
"""
