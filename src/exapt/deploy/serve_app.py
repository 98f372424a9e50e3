"""The HTTP API of `exapt serve` (FastAPI): routes, keys, limits and one-line JSON errors.

    POST /v1/predict        {"inputs": [...], "model": NAME?}  role predict
    GET  /v1/model          what is served: base model, strategy, labels, test metrics   role predict
    GET  /v1/drift          the drift monitor's windows                                  role metrics
    GET  /metrics           Prometheus text format                                       role metrics
    POST /v1/admin/reload   {"run": FOLDER, "model": NAME?}                             role admin
    GET  /healthz, /readyz, /docs, /openapi.json                                         open

Every error is `{"error": "<one line>"}`: 401 for a missing, unknown or revoked key (the
same line for all three), 403 for a key without the role, 413 for a body or a batch over
the limits, 422 for bad inputs (in the wording of the CLI), 429 over a key's rate, 503
while loading. A stack trace only ever reaches the server's log.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ExaptError
from ..version import __version__
from .serve_state import OPTIONS_ENV, ServeOptions, ServeState

log = logging.getLogger("exapt.serve")
UNAUTHORISED = "missing or invalid API key"


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] = Field(description="texts, sequences, feature rows (lists or objects), or base64 PNG/JPEG images")
    model: str | None = Field(None, description="which served model (default: the first)")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field(description="run or export folder on the server's machine")
    model: str | None = Field(None, description="name to serve it under (default: replaces the default model)")


class Problem(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def validation_line(exc: RequestValidationError) -> str:
    """Pydantic's error list -> the one line a person can act on."""
    errors = list(exc.errors())
    # a misspelt field also leaves 'inputs' missing: the misspelling is the line that helps
    errors.sort(key=lambda e: e.get("type") != "extra_forbidden")
    first = errors[0] if errors else {}
    where = [str(p) for p in first.get("loc", ()) if p != "body"]
    kind = first.get("type", "")
    if kind == "json_invalid":
        return "request: the body is not valid JSON"
    if kind == "missing":
        return f"request: no {where[0]!r} field; send {{\"inputs\": [...]}}" if where else "request: empty body"
    if kind == "extra_forbidden":
        return f"request: unknown field {where[-1]!r} (fields: inputs, model)"
    if kind in ("list_type", "model_attributes_type", "dict_type"):
        return ("request: 'inputs' must be a list" if where[:1] == ["inputs"]
                else "request: the body must be a JSON object like {\"inputs\": [...]}")
    return f"request: field {'.'.join(where) or 'body'}: {first.get('msg', 'invalid')}"


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is answered 413 before it is read whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise Problem(413, f"request: body over {self.limit} bytes")
            return message

        try:
            return await self.app(scope, limited, send)
        except Problem:
            return await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        await error(413, f"request: body over {self.limit} bytes (--max-body-bytes)")(scope, receive, send)


def caller_of(state: ServeState, role: str):
    """A dependency: the caller's key must be valid, have `role`, and be within its rate."""
    async def check(request: Request):
        if state.keys is None:
            return None
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
        caller = await asyncio.to_thread(state.keys.verify, key)   # scrypt on first sight: off the event loop
        if caller is None:
            raise Problem(401, UNAUTHORISED)
        if role not in caller.roles and "admin" not in caller.roles:
            raise Problem(403, f"this key lacks the {role!r} role")
        if not state.limiter.allow(caller.name, caller.rate):
            raise Problem(429, "rate limit reached for this key; retry shortly")
        return caller.name
    return check


def create_app(opts: ServeOptions) -> FastAPI:
    state = ServeState(opts)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.batcher.start()
        loading = asyncio.create_task(state.load_all())   # /healthz answers while the model loads
        yield
        loading.cancel()
        await state.batcher.stop()
        state.close()
        log.info("exapt serve: stopped; in-flight requests finished")

    app = FastAPI(title="exapt serve", version=__version__, lifespan=lifespan,
                  description="Predictions, model facts and drift of an exapt run (docs/serve.md).")
    app.state.exapt = state
    app.add_middleware(BodyLimit, limit=opts.max_body_bytes)
    add_error_handlers(app)
    add_routes(app, state)
    add_monitoring_routes(app, state)
    return app


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def problem(_request, exc: Problem):
        return error(exc.status, exc.message, {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    @app.exception_handler(ExaptError)
    async def bad_input(_request, exc: ExaptError):
        return error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        return error(422, validation_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http(_request, exc: StarletteHTTPException):
        return error(exc.status_code, exc.detail if isinstance(exc.detail, str) else "request failed")

    @app.exception_handler(Exception)
    async def internal(_request, exc: Exception):
        log.error("exapt serve: internal error", exc_info=exc)
        return error(500, "internal error (details are in the server's log)")

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        state: ServeState = request.app.state.exapt
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")
        state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        state.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response


def add_routes(app: FastAPI, state: ServeState) -> None:
    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/readyz")
    async def readyz():
        if state.ready:
            return {"status": "ready", "models": list(state.models), "pid": os.getpid()}
        return error(503, state.failed or "loading the model")

    @app.post("/v1/predict", openapi_extra=body_schema(PredictRequest))
    async def predict(request: Request, caller=Depends(caller_of(state, "predict"))):
        start = time.perf_counter()
        body = await parsed(request, PredictRequest)
        predictor = routed(state, body.model)
        if not body.inputs:
            raise ExaptError("request: 'inputs' is empty; send at least one input")
        if len(body.inputs) > state.opts.max_inputs:
            raise Problem(413, f"request: {len(body.inputs)} inputs; this server takes at most "
                               f"{state.opts.max_inputs} per request (--max-inputs)")
        items = predictor.prepare(body.inputs)
        out = await state.batcher.submit(predictor, items)
        answers = predictor.answers(out["logits"])
        if state.request_log is not None:
            state.request_log.write(caller, predictor.name, body.inputs, answers, time.perf_counter() - start)
        return {"model": predictor.identity(), "predictions": answers}

    @app.get("/v1/model")
    async def model(_caller=Depends(caller_of(state, "predict"))):
        waiting(state)
        return {"default": state.opts.default_name, "models": {n: model_info(state, n) for n in state.models},
                "batching": {"max_batch": state.opts.max_batch, "max_wait_ms": state.opts.max_wait_ms}}



def add_monitoring_routes(app: FastAPI, state: ServeState) -> None:
    @app.get("/v1/drift")
    async def drift(_caller=Depends(caller_of(state, "metrics"))):
        waiting(state)
        return {"monitoring": state.opts.monitor, "pid": os.getpid(),
                "models": {n: m.summary() for n, m in state.monitors.items()}}

    @app.get("/metrics")
    async def metrics(_caller=Depends(caller_of(state, "metrics"))):
        body, kind = state.metrics.exposition()
        return Response(body, media_type=kind)

    @app.post("/v1/admin/reload", openapi_extra=body_schema(ReloadRequest))
    async def reload(request: Request, _caller=Depends(caller_of(state, "admin"))):
        waiting(state)
        body = await parsed(request, ReloadRequest)
        name = body.model or state.opts.default_name
        async with state.reload_lock:
            predictor, monitor = await asyncio.to_thread(state.load_model, name, body.run)
            old = state.models.get(name)
            state.install(name, predictor, monitor)
        log.warning("exapt serve: %s now serves %s", name, body.run)
        return {"model": name, "now": predictor.identity(), "was": old.identity() if old is not None else None}


def model_info(state: ServeState, name: str) -> dict:
    """A served model's facts, and which other served names share its base weights."""
    p = state.models[name]
    info = p.info()
    base = getattr(p, "base", None)
    info["shares_base_with"] = [n for n, q in state.models.items()
                                if n != name and base is not None and getattr(q, "base", None) is base]
    return info


def body_schema(model) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def parsed(request: Request, model):
    """The body as JSON whatever its content type (curl -d sends a form type), checked by `model`."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise ExaptError("request: the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ExaptError("request: the body must be a JSON object like {\"inputs\": [...]}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None


def waiting(state: ServeState) -> None:
    if not state.ready:
        raise Problem(503, state.failed or "the model is loading; retry when /readyz answers 200")


def routed(state: ServeState, name: str | None):
    waiting(state)
    name = name or state.opts.default_name
    predictor = state.models.get(name)
    if predictor is None:
        raise ExaptError(f"request: unknown model {name!r} (served: {', '.join(state.models)})")
    return predictor


def app_from_environment() -> FastAPI:
    """The app a uvicorn worker builds (--workers N): options travel in an environment variable."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return create_app(ServeOptions.from_json(os.environ[OPTIONS_ENV]))
