"""The FastAPI application: the comparison page, the OpenAI-compatible API, health and metrics.

Routes: ``GET /`` (page), ``GET /api/example`` and ``POST /api/compare`` (the page's calls),
``GET /v1/models``, ``POST /v1/chat/completions``, ``GET /healthz``, ``GET /metrics``.
Every error is a JSON body ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from shirg.errors import ShirgError
from shirg.memory import rss_bytes
from shirg.serve.batcher import MicroBatcher, QueueFull
from shirg.serve.engine import Defaults, Engine, Settings, model_id, overlay_png
from shirg.serve.inputs import Limits, RequestError, check_question, decode_image, image_data_url, parse_chat
from shirg.serve.page import render_page
from shirg.serve.schemas import ChatCompletionRequest, CompareRequest, ShirgSettings

PAGE_DEFAULT_MODES = ("lowres", "full", "shirg")
__all__ = ["Defaults", "Engine", "Limits", "RequestError", "create_app", "model_id"]  # what `shirg serve` uses


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(RequestError(message, status, param, code).body(), status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


PROTECTED = ("/v1/", "/api/compare")


class LimitsMiddleware:
    """Checks the API key on the protected routes (401 before the body is read), refuses bodies
    over ``max_body_bytes`` (413, also when no Content-Length is sent) and counts responses by
    status for ``/metrics``."""

    def __init__(self, app, max_body_bytes: int, counts: collections.Counter, api_key: str | None = None) -> None:
        self.app, self.max_body, self.counts, self.api_key = app, max_body_bytes, counts, api_key

    def _authorized(self, scope) -> bool:
        if self.api_key is None or not scope.get("path", "").startswith(PROTECTED):
            return True
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        token = given[7:] if given[:7].lower() == b"bearer " else b""
        return hmac.compare_digest(token, self.api_key.encode())

    async def _send_json(self, send, status: int, error: RequestError) -> None:
        body = json.dumps(error.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.counts[status] += 1

    async def _drain(self, receive, already: int) -> None:
        """Read and drop the rest of an oversized body (up to 4x the limit), so the client, still
        sending, reads the 413 instead of a reset connection; nothing is kept."""
        seen = already
        while seen <= 4 * self.max_body:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _send_413(self, send) -> None:
        await self._send_json(send, 413, RequestError(
            f"the request body is over the server's limit of {self.max_body} bytes", 413, None, "body_too_large",
            headers={"Connection": "close"}))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await self._send_json(send, 401, RequestError(
                "a valid API key is required (Authorization: Bearer <key>)", 401, None, "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"}))
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                too_big = True
            if too_big:
                await self._drain(receive, 0)
                await self._send_413(send)
                return
        state = {"received": 0, "overflow": False, "started": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    state["overflow"] = True
                    if message.get("more_body", False):
                        await self._drain(receive, state["received"])
                    raise _BodyTooLarge
            return message

        async def counting_send(message):
            if state["overflow"]:
                return  # whatever the app answers to the interrupted read, the client gets the 413
            if message["type"] == "http.response.start":
                state["started"] = True
                self.counts[int(message["status"])] += 1
            await send(message)

        try:
            await self.app(scope, limited_receive, counting_send)
        except _BodyTooLarge:
            pass
        if state["overflow"]:
            await self._send_413(send)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "the request body is not valid", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    return f"{where}: {first.get('msg', 'invalid value')}", (loc[0] if loc else None)


def create_app(engine: Engine, max_batch: int = 8, batch_wait_ms: float = 10.0, max_queue: int = 64,
               request_timeout_s: float = 120.0, api_key: str | None = None, example=None) -> FastAPI:
    """The app. ``example``: a ``shirg.bundled.DemoSample`` the page offers (None: upload only)."""
    batcher = MicroBatcher(lambda s, items: engine.run(s, items), max_batch=max_batch,
                           wait_s=batch_wait_ms / 1e3, max_queue=max_queue)
    counts: collections.Counter = collections.Counter()
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(batcher.stop)

    app = FastAPI(title="shirg serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.batcher, app.state.status_counts = engine, batcher, counts
    app.add_middleware(LimitsMiddleware, max_body_bytes=engine.limits.max_body_bytes, counts=counts, api_key=api_key)

    # ---------------------------------------------------------------- errors
    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return _error(400, message, param, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _error(500, f"internal error ({type(exc).__name__}); the server keeps running", code="internal")

    async def answer(settings: Settings, image, question: str):
        """Queue one request and wait for its answer (503 when the queue is full, 504 on timeout)."""
        try:
            future = batcher.submit(settings, (image, question), batchable=settings.temperature == 0)
        except QueueFull as e:
            raise RequestError(f"the server is busy: {e}; retry shortly", status=503, code="queue_full",
                               headers={"Retry-After": "1"}) from e
        except RuntimeError as e:
            raise RequestError(str(e), status=503, code="unavailable", headers={"Retry-After": "5"}) from e
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=request_timeout_s)
        except TimeoutError as e:
            future.cancel()
            raise RequestError(f"no answer within the server's {request_timeout_s:g} s request timeout",
                               status=504, code="timeout") from e
        except RequestError:
            raise
        except Exception as e:  # noqa: BLE001 - the model call failed for this request alone
            if isinstance(e, ShirgError):
                raise RequestError(str(e), status=400, code="invalid_request") from e
            raise RequestError(f"the model call failed ({type(e).__name__}: {e})", status=500,
                               code="model_error") from e

    def server_state() -> dict[str, Any]:
        return {"status": "ok", "models": [model_id(m) for m in engine.modes], "modes": engine.modes,
                "uptime_s": round(time.time() - started, 3), "rss_bytes": rss_bytes(),
                "batcher": batcher.stats(),
                "responses_by_status": {str(k): v for k, v in sorted(counts.items())}}

    # ---------------------------------------------------------------- health, metrics
    @app.get("/healthz")
    async def healthz():
        return server_state()

    @app.get("/metrics")
    async def metrics():
        return server_state()

    # ---------------------------------------------------------------- OpenAI-compatible API
    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": model_id(m), "object": "model", "created": int(started),
                                            "owned_by": "shirg", "mode": m} for m in engine.modes]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest):
        mode = engine.mode_of(body.model)
        settings = engine.settings(mode, body.shirg, body.max_completion_tokens or body.max_tokens,
                                   body.temperature, body.seed)
        image, question = await run_in_threadpool(parse_chat, body, engine.limits)
        ans = await answer(settings, image, question)
        meta = ans.meta
        prompt, completion = int(meta["prompt_length"]), len(ans.token_ids)
        extra = {"mode": meta["mode"], "visual_tokens": meta["visual_tokens"], "time_s": meta["time_s"],
                 "batch_size": meta["batch_size"]}
        if meta.get("fallback"):
            extra["fallback_reason"] = meta.get("fallback_reason")
        if body.shirg is not None and body.shirg.overlay:
            png = await run_in_threadpool(overlay_png, image, ans, settings, engine, f"{mode}: kept tokens")
            extra["overlay"] = image_data_url(png) if png else None
        finish = "length" if completion >= settings.gen_length else "stop"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_id(mode),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ans.text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"image_tokens": meta["visual_tokens"]}},
            "shirg": extra,
        }

    # ---------------------------------------------------------------- the page
    page_modes = [m for m in PAGE_DEFAULT_MODES if m in engine.modes] or engine.modes[:3]

    @app.get("/", response_class=HTMLResponse)
    async def page():
        opts = engine.options
        return HTMLResponse(render_page({
            "modes": engine.modes, "default_modes": page_modes, "resolution": opts.resolution,
            "default_k": opts.budget(), "max_k": opts.grid() ** 2, "score": opts.score,
            "has_example": example is not None, "needs_key": api_key is not None,
        }))

    @app.get("/api/example")
    async def page_example():
        if example is None:
            raise RequestError("this server has no bundled example", status=404, code="no_example")
        data = await run_in_threadpool(lambda: image_data_url(example.image.read_bytes()))
        return {"image": data, "question": example.question, "answers": example.answers}

    @app.post("/api/compare")
    async def compare(body: CompareRequest):
        modes = list(dict.fromkeys(body.modes))
        for m in modes:
            if m not in engine.modes:
                raise RequestError(f"unknown mode {m!r}; this server serves {', '.join(engine.modes)}",
                                   param="modes", code="model_not_found")
        extra = ShirgSettings(k=body.k, score=body.score)
        settings = [engine.settings(m, extra if m not in ("lowres", "lavida", "full") else None) for m in modes]
        question = check_question(body.question, engine.limits, param="question")
        image = await run_in_threadpool(decode_image, body.image, engine.limits, "image")
        answers = await asyncio.gather(*(answer(s, image, question) for s in settings))
        results = []
        for m, s, ans in zip(modes, settings, answers, strict=True):
            n = ans.meta["visual_tokens"]
            png = await run_in_threadpool(overlay_png, image, ans, s, engine, f"{m}: {n} visual tokens")
            results.append({"mode": m, "answer": ans.text, "visual_tokens": n,
                            "prompt_tokens": ans.meta["prompt_length"], "time_s": ans.meta["time_s"],
                            "batch_size": ans.meta["batch_size"], "fallback": ans.meta.get("fallback_reason"),
                            "overlay": image_data_url(png) if png else None})
        return {"question": question, "results": results}

    return app
