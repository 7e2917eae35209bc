"""The model server: FastAPI + uvicorn around the backtest's ``Forecaster``.

``GET /health/live``, ``GET /health/ready``, ``GET /v1/model``, ``POST /v1/forecast``,
``POST /v1/reload`` (bearer token from ``$BT_LSTM_RELOAD_TOKEN``; load, check and warm up,
then one atomic swap; a refused bundle leaves the old one serving) and ``GET /`` (a page on
the loaded bundle). Forecasts are parsed, checked and computed on Starlette's thread pool, never
on the event loop.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from typing_extensions import TypedDict

from bt_lstm.live.klines import Warmup, bundle_warmup, frame_of
from bt_lstm.signals.regimes import REGIME_LABELS

TOKEN_ENV = "BT_LSTM_RELOAD_TOKEN"
SERVE_ENV = "BT_LSTM_SERVE"  # JSON settings of ``serve --workers N`` for its worker processes
Price = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class CandleIn(TypedDict):
    """One candle of a request (a TypedDict: validated to plain dicts, no object per candle)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    # below 2**53: exact in the float64 arrays the pipeline reads
    t: Annotated[int, Field(ge=0, lt=2**53, description="open time, ms since the epoch (UTC)")]
    o: Price
    h: Price
    l: Price  # noqa: E741 (Binance's field name)
    c: Price
    v: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ForecastIn(TypedDict):
    """``POST /v1/forecast`` body: the candles, oldest first (unknown fields refused)."""
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    candles: Annotated[list[CandleIn], Field(min_length=1, max_length=20_000)]


# The body is parsed and validated straight from its bytes (pydantic-core's JSON parser), not
# by FastAPI's json.loads + per-object validation: a third of the request's time before.
FORECAST_IN = TypeAdapter(ForecastIn)


class ForecastOut(BaseModel):
    """``POST /v1/forecast`` answer: regime, its label, the forecast, the model that made it and
    the bundle's id."""
    model_config = ConfigDict(protected_namespaces=())
    regime: int
    label: str
    forecast: float | None
    model: str
    bundle_id: str
    datetime: int


class ReloadIn(BaseModel):
    """``POST /v1/reload`` body: the folder of the bundle to load next."""
    model_config = ConfigDict(extra="forbid")
    models: str


@dataclass(frozen=True)
class Loaded:
    """One loaded, checked and warmed-up bundle (swapped as a whole)."""

    forecaster: Any
    folder: str
    bundle_id: str
    warmup: Warmup


def bundle_id(folder: Path) -> str:
    """A short id of a bundle: sha256 over its JSON files' names and contents."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).glob("*.json")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def load_bundle(folder: str, no_skill: str, skill_p: float | None,
                like: Loaded | None = None) -> Loaded:
    """Load (every file checked against the manifest), check and warm up a bundle.

    Raises ``ValueError`` (``ArtifactError``) for a tampered or incompatible bundle."""
    from bt_lstm.models.forecast import load_forecaster

    kw = {} if skill_p is None else {"skill_p": skill_p}
    fc = load_forecaster(folder, no_skill=no_skill, **kw)
    if like is not None:
        old = like.forecaster
        mine, theirs = fc.shared_meta()["features"], old.shared_meta()["features"]
        if mine != theirs:
            raise ValueError(f"{folder}: features {mine} differ from the serving bundle's "
                             f"{theirs}")
    warm = bundle_warmup(fc)  # also runs the pipeline once: the warm-up of the new bundle
    rng = np.random.default_rng(1)
    n = warm.first_ready + 5
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    candles = [(i * 3_600_000, x, x * 1.01, x * 0.99, x, 1.0) for i, x in enumerate(close)]
    regime, forecast = fc.forecast_last(frame_of(candles))
    if not math.isfinite(forecast):
        raise ValueError(f"{folder}: the warm-up forecast is not finite ({forecast})")
    return Loaded(fc, str(folder), bundle_id(Path(folder)), warm)


def _unprocessable(field: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", "candles", field] if field else
                                       ["body", "candles"], "msg": msg, "type": "value_error"}])


def read_candles(body: bytes, first_ready: int) -> tuple[np.ndarray, np.ndarray]:
    """A request body -> open times (T,) int64 and o, h, l, c, v (T, 5) float64, validated.

    Raises ``RequestValidationError`` (pydantic's schema errors, located in the body) or
    ``HTTPException`` 422 naming the candle and field (too few, unsorted, inconsistent).
    """
    try:
        cs = FORECAST_IN.validate_json(body)["candles"]
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None
    if len(cs) < first_ready:
        raise _unprocessable("", f"{len(cs)} candles: the bundle needs at least "
                                 f"{first_ready} for a forecast")
    t = np.fromiter((c["t"] for c in cs), dtype=np.int64, count=len(cs))  # (T,)
    x = np.array([(c["o"], c["h"], c["l"], c["c"], c["v"]) for c in cs], dtype=np.float64)
    back = np.flatnonzero(np.diff(t) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise _unprocessable(f"{i}.t", f"timestamps not strictly increasing at "
                                       f"candle {i} ({t[i]} after {t[i - 1]})")
    o, h, lo, c = x[:, 0], x[:, 1], x[:, 2], x[:, 3]
    unbound = np.flatnonzero((h < np.maximum(np.maximum(o, c), lo)) | (lo > np.minimum(o, c)))
    if unbound.size:
        raise _unprocessable(f"{int(unbound[0])}", "high/low do not bound open and close")
    return t, x


def forecast_body(ld: Loaded, body: bytes) -> dict:
    """``POST /v1/forecast``: validate the candles, forecast at the last one.

    Only the last ``warmup.history`` candles reach the pipeline: the bundle's warm-up says that
    many give the forecast all of history gives (recursive averages forgotten to ``FORGET``),
    so a longer body costs no more than that (tests/test_live.py checks the equality).
    """
    t, x = read_candles(body, ld.warmup.first_ready)
    keep = slice(max(len(t) - ld.warmup.history, 0), None)
    fc = ld.forecaster
    regime, value = fc.forecast_last(frame_of(np.column_stack([t[keep], x[keep]])))
    made = not math.isnan(value)
    return {"regime": regime, "label": REGIME_LABELS[regime] if 0 <= regime < 3 else "unknown",
            "forecast": value if made else None, "model": fc.model_for(regime) if made else "",
            "bundle_id": ld.bundle_id, "datetime": int(t[-1])}


def _inline_schema(adapter: TypeAdapter) -> dict:
    """The adapter's JSON schema with its ``$defs`` written in place (for openapi_extra)."""
    schema = adapter.json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return inline(schema)


def create_app(models: str, no_skill: str = "flat", skill_p: float | None = None,
               workers: int = 1) -> FastAPI:
    """The app, with ``models`` loaded before it serves (a bad bundle raises here).

    ``workers``: how many processes serve this app; with more than one, ``/v1/reload`` is
    refused (it would swap the bundle of one process only)."""
    state = {"loaded": load_bundle(models, no_skill, skill_p)}
    reload_lock = threading.Lock()
    app = FastAPI(title="bt-lstm model server", docs_url="/docs")

    @app.exception_handler(RequestValidationError)
    def invalid(request: Any, exc: RequestValidationError) -> JSONResponse:
        # the offending input is not echoed back: NaN or inf cannot be written as JSON
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                   "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.get("/health/live")
    def live() -> dict:
        return {"status": "ok"}

    @app.get("/health/ready")
    def ready() -> dict:
        loaded = state["loaded"]
        return {"status": "ready", "bundle_id": loaded.bundle_id}

    def describe() -> dict:
        ld = state["loaded"]
        fc = ld.forecaster
        return {"bundle_id": ld.bundle_id, "folder": ld.folder,
                "regimes": {str(k): {"label": REGIME_LABELS[k] if 0 <= k < 3 else "unknown",
                                     "model": v} for k, v in sorted(fc.routes().items())},
                "features": fc.shared_meta()["features"], "lookback": fc.lookback,
                "warmup": {"first_ready": ld.warmup.first_ready, "history": ld.warmup.history},
                "data_fingerprint": fc.info.get("data_fingerprint"),
                "no_skill": fc.no_skill, "skill_p": fc.skill_p}

    @app.get("/v1/model")
    def model() -> dict:
        return describe()

    @app.post("/v1/forecast", response_model=ForecastOut,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": _inline_schema(FORECAST_IN)}}}})
    async def forecast(request: Request) -> JSONResponse:
        ld = state["loaded"]  # one reference for the whole request (a reload swaps it)
        body = await request.body()
        # parsing, checks and inference on the thread pool, never on the event loop
        return JSONResponse(await run_in_threadpool(forecast_body, ld, body))

    @app.post("/v1/reload")
    def reload(req: ReloadIn, authorization: str | None = Header(default=None)) -> dict:
        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise HTTPException(403, f"reload disabled: set {TOKEN_ENV} for the server")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not authorization or not secrets.compare_digest(given, token):
            raise HTTPException(401, "bad or missing bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        if workers > 1:
            raise HTTPException(409, f"reload refused: this server runs {workers} worker "
                                     f"processes and a reload would reach one; restart it with "
                                     f"the new --models (or serve with --workers 1)")
        with reload_lock:
            old = state["loaded"]
            try:
                new = load_bundle(req.models, old.forecaster.no_skill, old.forecaster.skill_p,
                                  like=old)
            except (ValueError, OSError, KeyError) as exc:
                raise HTTPException(409, f"bundle refused, still serving {old.bundle_id}: "
                                         f"{str(exc).splitlines()[0]}") from None
            state["loaded"] = new  # the swap: one reference assignment
        return {"status": "reloaded", "bundle_id": new.bundle_id, "previous": old.bundle_id}

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        d = describe()
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in d.items())
        return ("<!doctype html><html><head><meta charset='utf-8'><title>bt-lstm model server"
                f"</title></head><body><h1>bt-lstm model server</h1><table>{rows}</table>"
                "<p>POST /v1/forecast with {\"candles\": [{\"t\", \"o\", \"h\", \"l\", \"c\", "
                "\"v\"}, ...]}; docs at <a href='/docs'>/docs</a>.</p></body></html>")

    return app


def app_from_env() -> FastAPI:
    """The app of one worker process of ``serve --workers N`` (settings in ``$BT_LSTM_SERVE``)."""
    from bt_lstm.models.training import configure_threads

    cfg = json.loads(os.environ[SERVE_ENV])
    configure_threads(cfg["threads"])
    return create_app(cfg["models"], cfg["no_skill"], cfg["skill_p"], workers=cfg["workers"])
