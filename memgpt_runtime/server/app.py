"""The FastAPI application: OpenAI's routes on one engine, API keys, a body limit, errors in OpenAI's shape.

`create_app(state)` wires the routes; `ServerState` holds the model (loaded in a background thread, so `/health`
answers 503 until it is ready), the engine and the metrics. Requests are parsed by `protocol.py`, run by
`generation.py`, and written here as OpenAI's JSON objects and server-sent events. Model work never runs on the
event loop: tokenizing and submitting go to worker threads, generation to the engine's own thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from contextlib import aclosing, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import Engine
from ..errors import UsageError
from . import protocol as p
from .errors import APIError, BadRequest, NotFound, ServerError, TooLarge, Unauthorized, Unavailable, error_body
from .generation import Generation, merged
from .metrics import Metrics
from .prepare import api_error, prepare
from .responses import ChatWriter, CompletionWriter

log = logging.getLogger("memgpt.serve")

ROUTES = ("/health", "/v1/models", "/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize", "/metrics")


class ServerState:
    """The model and engine once loaded, the settings, the metrics."""

    def __init__(
        self,
        folder,
        model_name: str,
        api_keys: list[str],
        max_batch: int,
        max_queue: int,
        threads: int | None,
        max_body_bytes: int,
        batch_invariant: bool = False,
    ):
        self.folder, self.model_name, self.batch_invariant = folder, model_name, batch_invariant
        self._key_digests = [hashlib.sha256(k.encode()).digest() for k in api_keys]
        self.max_batch, self.max_queue, self.threads, self.max_body_bytes = (
            max_batch,
            max_queue,
            threads,
            max_body_bytes,
        )
        self.lm = None
        self.engine: Engine | None = None
        self.load_error: BaseException | None = None
        self.on_load_failure = lambda: None
        self.metrics = Metrics()
        self.created = int(time.time())

    def load(self) -> None:
        """Load the model and start the engine (in a background thread, while /health says 503)."""
        from ..model import load

        try:
            lm = load(self.folder, threads=self.threads, batch_invariant=self.batch_invariant)
            self.engine = Engine(lm, slots=self.max_batch, max_queue=self.max_queue)
            self.lm = lm
            log.info("model %s loaded: serving as %r", self.folder, self.model_name)
        except BaseException as exc:  # the server exits with it (cli.py)
            self.load_error = exc
            self.on_load_failure()

    def key_ok(self, key: str | None) -> bool:
        """Whether `key` is one of the server's keys, in time independent of where it differs (hashes compared)."""
        if not self._key_digests:
            return True
        given = hashlib.sha256((key or "").encode()).digest()
        ok = False
        for digest in self._key_digests:
            ok |= hmac.compare_digest(given, digest)
        return ok and key is not None

    def ready(self):
        if self.lm is None:
            raise Unavailable("the model is still loading; retry shortly", code="loading")
        return self.lm, self.engine

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise NotFound(
                f"the model '{name}' does not exist; this server serves '{self.model_name}'",
                param="model",
                code="model_not_found",
            )


# -- middleware: keys, body size, per-route counts -------------------------------------------------------------


def guard(app, state: ServerState):
    """A plain ASGI middleware (it sees every request, unknown routes included): the API key on every route but
    /health, the body limit (Content-Length, then the bytes as they arrive), and request counts for /metrics."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status = {"code": 500}

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if path != "/health" and not state.key_ok(_given_key(headers)):
                raise Unauthorized(
                    "invalid or missing API key: send it as 'Authorization: Bearer KEY'",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > state.max_body_bytes):
                raise TooLarge(
                    f"the request body is larger than this server's limit of {state.max_body_bytes} bytes",
                    code="request_too_large",
                )
        except APIError as exc:
            await _json_error(exc)(scope, receive, counted_send)
            state.metrics.request_done(route, exc.status)
            return

        seen = {"bytes": 0}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > state.max_body_bytes:  # a body without Content-Length: the app answers 413
                    raise TooLarge(
                        f"the request body is larger than this server's limit of {state.max_body_bytes} bytes",
                        code="request_too_large",
                    )
            return message

        try:
            await app(scope, limited_receive, counted_send)
        finally:
            state.metrics.request_done(route, status["code"])

    return middleware


def _given_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key")


def _json_error(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


# -- the application -------------------------------------------------------------------------------------------


def create_app(state: ServerState) -> FastAPI:
    AppStatus.disable_automatic_graceful_drain()  # SIGTERM lets running streams finish (uvicorn bounds the wait)

    @asynccontextmanager
    async def lifespan(app):
        if state.lm is None:  # a Ray Serve replica loads before its app starts (ray_serve.py)
            threading.Thread(target=state.load, name="memgpt-load", daemon=True).start()
        yield
        if state.engine is not None:
            await run_in_threadpool(state.engine.close)

    app = FastAPI(title="memgpt-runtime", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(APIError)
    async def on_api_error(request, exc: APIError):
        return _json_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, exc: StarletteHTTPException):
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(
            error_body(message, kind), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def on_error(request, exc: Exception):
        log.exception("error answering %s", request.url.path)
        return _json_error(api_error(exc))

    @app.get("/health")
    async def health():
        if state.load_error is not None:
            return _json_error(ServerError(f"the model failed to load: {state.load_error}"))
        if state.lm is None:
            return _json_error(Unavailable("Loading model", code="loading"))
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        lm, engine = state.ready()
        card = {
            "id": state.model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "memgpt-runtime",
            "max_model_len": engine.capacity,
        }
        return {"object": "list", "data": [card]}

    @app.get("/metrics")
    async def metrics():
        stats = state.engine.stats() if state.engine is not None else {"running": 0, "waiting": 0}
        text = state.metrics.render(stats["running"], stats["waiting"], state.lm is not None)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.post("/tokenize")
    async def tokenize(request: Request):
        lm, engine = state.ready()
        req = p.parse(p.TokenizeRequest, await request.body())
        state.check_model(req.model)
        tokens = await run_in_threadpool(_tokenize, lm, req)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": engine.capacity}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        lm, _ = state.ready()
        req = p.parse(p.DetokenizeRequest, await request.body())
        state.check_model(req.model)
        vocab = lm.manifest.vocab_size
        bad = next((t for t in req.tokens if not 0 <= t < vocab), None)
        if bad is not None:
            raise BadRequest(f"tokens must be ids in [0, {vocab}), got {bad}", param="tokens")
        text = await run_in_threadpool(lm.tokenizer.decode, req.tokens)
        return {"prompt": text, "content": text}  # vLLM's and llama.cpp's names for it

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        lm, engine = state.ready()
        req = p.parse(p.ChatRequest, await request.body())
        state.check_model(req.model)
        job, eos = await run_in_threadpool(prepare, lm, engine, state.max_batch, req)
        return await _answer(request, state, lm, engine, job, eos, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        lm, engine = state.ready()
        req = p.parse(p.CompletionRequest, await request.body())
        state.check_model(req.model)
        job, eos = await run_in_threadpool(prepare, lm, engine, state.max_batch, req)
        return await _answer(request, state, lm, engine, job, eos, chat=False)

    return guard(app, state)


def _tokenize(lm, req: p.TokenizeRequest) -> list[int]:
    given = [x for x in (req.prompt, req.content, req.messages) if x is not None]
    if len(given) != 1:
        raise BadRequest("give exactly one of prompt (or content) and messages", param="prompt")
    try:
        if req.messages is not None:
            text = lm.tokenizer.apply_chat_template(
                p.chat_messages(req.messages), add_generation_prompt=bool(req.add_generation_prompt), tokenize=False
            )
            return lm.tokenizer.encode(text, add_special_tokens=bool(req.add_special_tokens))
        add = True if req.add_special_tokens is None else req.add_special_tokens
        return lm.tokenizer.encode(given[0], add_special_tokens=add)
    except UsageError as exc:
        raise BadRequest(str(exc), param="messages" if req.messages is not None else "prompt") from None


async def _answer(request: Request, state: ServerState, lm, engine, job: p.Job, eos, chat: bool):
    """Submit every prompt of `job`, then answer with one JSON object or a stream of events."""
    generations = [Generation(engine, lm.tokenizer, ids, job, eos, i * job.n) for i, ids in enumerate(job.prompts)]
    try:
        for g in generations:
            await g.start()
    except BaseException as exc:
        for g in generations:
            g.cancel()
        raise api_error(exc, "messages" if chat else "prompt") from None
    meta = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": state.model_name,
    }
    writer = ChatWriter(lm.tokenizer, job, meta) if chat else CompletionWriter(lm.tokenizer, job, meta)
    if job.stream:
        events = _stream(state, generations, writer)
        return EventSourceResponse(events, sep="\n", ping=15, send_timeout=60)
    task = asyncio.ensure_future(_collect(state, generations, writer))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait([task, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():  # the client left: stop the generation (its slots are free before the next step)
            task.cancel()
        gone.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)
    if task.cancelled():
        return Response(status_code=499)
    return JSONResponse(task.result())


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (as vLLM's `listen_for_disconnect`)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _collect(state: ServerState, generations: list[Generation], writer) -> dict:
    unfinished = "cancelled"  # the finish reason counted for choices cut short: the client left, or an error
    try:
        async with aclosing(merged(generations)) as deltas:
            async for out in deltas:
                for d in out:
                    writer.add(d)
    except Exception as exc:
        unfinished = "error"
        raise api_error(exc) from None
    finally:
        _account(state, generations, unfinished)
    return writer.whole(_usage(generations))


async def _stream(state: ServerState, generations: list[Generation], writer):
    unfinished = "cancelled"
    try:
        for chunk in writer.opening():
            yield _dumps(chunk)
        async with aclosing(merged(generations)) as deltas:
            async for out in deltas:
                for d in out:
                    yield _dumps(writer.chunk(d))
        if writer.job.include_usage:
            yield _dumps(writer.usage_chunk(_usage(generations)))
        yield "[DONE]"
    except Exception as exc:  # after the stream started the status is sent: the error goes as an event
        unfinished = "error"
        log.warning("stream ended by an error: %s", exc)
        yield _dumps(api_error(exc).body())
        yield "[DONE]"
    finally:
        _account(state, generations, unfinished)
        for g in generations:
            g.cancel()


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _usage(generations: list[Generation]) -> dict:
    prompt = sum(len(g.prompt) for g in generations)
    completion = sum(g.completion_tokens for g in generations)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _account(state: ServerState, generations: list[Generation], unfinished: str) -> None:
    now = time.perf_counter()
    for g in generations:
        reasons = [c.finish_reason or unfinished for c in g.choices]
        state.metrics.generation_done(
            len(g.prompt), g.completion_tokens, reasons, g.submitted_at, g.first_token_at, g.finished_at or now
        )
