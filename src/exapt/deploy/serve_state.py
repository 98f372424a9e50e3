"""What one server process holds: its options, served models, keys, batcher, monitors,
rate limits and request log. The routes (serve_app.py) only read and call it.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ExaptError
from .keys import KeyFile
from .monitor import (DEFAULT_ALPHA, DEFAULT_PATIENCE, DEFAULT_PERMUTATIONS, DEFAULT_REFERENCE, DEFAULT_WINDOW,
                      DriftMonitor, build_reference)
from .serve_batching import Batcher
from .serve_metrics import ServeMetrics
from .serving_model import load_predictor

log = logging.getLogger("exapt.serve")
OPTIONS_ENV = "EXAPT_SERVE_OPTIONS"   # how a uvicorn worker receives the options


@dataclass
class ServeOptions:
    target: str                                   # run or export folder: the default model
    models: dict = field(default_factory=dict)    # more served models: name -> folder (sharing base weights)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    keys: str | None = None
    insecure: bool = False
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_body_bytes: int = 4 * 2 ** 20
    max_inputs: int = 256                          # per request (413 above)
    rate: float = 50.0                             # requests per second per key (burst: 2 seconds' worth)
    log_requests: str | None = None
    log_inputs: bool = False
    monitor: bool = True
    window: int = DEFAULT_WINDOW
    alpha: float = DEFAULT_ALPHA
    patience: int = DEFAULT_PATIENCE
    drift_test: str = "mmd"
    reference_size: int = DEFAULT_REFERENCE
    permutations: int = DEFAULT_PERMUTATIONS

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeOptions":
        return cls(**json.loads(text))

    @property
    def default_name(self) -> str:
        p = Path(self.target)
        return p.name if p.name not in ("", ".", "..") else (p.resolve().name or "default")


class RateLimiter:
    """A token bucket per key: `rate` requests per second, bursts of 2 seconds' worth."""

    def __init__(self, rate: float):
        self.rate = rate
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def allow(self, name: str, rate: float | None) -> bool:
        rate = rate or self.rate
        if not rate or rate <= 0:
            return True
        now, burst = time.monotonic(), max(1.0, 2.0 * rate)
        with self.lock:
            tokens, last = self.buckets.get(name, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            ok = tokens >= 1.0
            self.buckets[name] = (tokens - 1.0 if ok else tokens, now)
        return ok


class RequestLog:
    """One JSON line per request, inputs as sha256 digests unless --log-inputs."""

    def __init__(self, path: str, raw_inputs: bool):
        self.path, self.raw = Path(path), raw_inputs
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def write(self, caller: str | None, model: str, inputs: list, answers: list[dict], seconds: float) -> None:
        shown = inputs if self.raw else [hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()
                                         for x in inputs]
        line = {"time": round(time.time(), 3), "caller": caller, "model": model,
                "inputs" if self.raw else "inputs_sha256": shown,
                "predictions": [a.get("label", a.get("labels", a.get("value"))) for a in answers],
                "ms": round(seconds * 1000, 2)}
        data = (json.dumps(line) + "\n").encode()
        with self.lock:  # one write() per line, O_APPEND: lines of several workers never interleave mid-line
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


class ServeState:
    def __init__(self, opts: ServeOptions):
        self.opts = opts
        self.keys = KeyFile(opts.keys) if opts.keys else None
        self.models: dict = {}
        self.monitors: dict[str, DriftMonitor] = {}
        self.shared: list = []
        self.ready = False
        self.failed: str | None = None
        self.metrics = ServeMetrics()
        self.limiter = RateLimiter(opts.rate)
        self.request_log = RequestLog(opts.log_requests, opts.log_inputs) if opts.log_requests else None
        self.batcher = Batcher(opts.max_batch, opts.max_wait_ms, on_batch=self.on_batch)
        self.monitor_pool = ThreadPoolExecutor(1, thread_name_prefix="exapt-drift")
        self.reload_lock = asyncio.Lock()

    # -- loading ----------------------------------------------------------------------
    def load_model(self, name: str, path: str):
        """Load, warm up and (monitoring on) build the drift reference: all before the
        model takes a request. Runs on a worker thread."""
        predictor = load_predictor(path, name, self.shared)
        warm = {"text": ["warm-up"], "features": [[0.0] * len(predictor.features)]}
        if predictor.input_kind in warm:
            predictor.outputs(predictor.prepare(warm[predictor.input_kind]))
        monitor = None
        if self.opts.monitor and predictor.config is None:   # an export whose source run folder is gone
            log.warning("[%s] drift monitoring off: the reference is the source run's test split, and its "
                        "folder %s is gone", name, getattr(predictor, "source", "?"))
        elif self.opts.monitor:
            ref = build_reference(predictor, self.opts.reference_size)
            monitor = DriftMonitor(ref, window=self.opts.window, alpha=self.opts.alpha, patience=self.opts.patience,
                                   test=self.opts.drift_test, permutations=self.opts.permutations,
                                   log=lambda line, n=name: log.warning("[%s] %s", n, line))
        return predictor, monitor

    def install(self, name: str, predictor, monitor) -> None:
        """From now on, new requests for `name` go to `predictor` (in-flight ones keep theirs)."""
        self.models[name] = predictor
        if monitor is not None:
            self.monitors[name] = monitor
        else:
            self.monitors.pop(name, None)

    async def load_all(self) -> None:
        try:
            targets = {self.opts.default_name: self.opts.target, **self.opts.models}
            for name, path in targets.items():
                self.install(name, *await asyncio.to_thread(self.load_model, name, path))
            self.ready = True
            self.metrics.ready.set(1)
            log.info("exapt serve: ready (%s)", ", ".join(self.models))
        except ExaptError as e:
            self.failed = str(e)
            log.error("exapt serve: %s", e)
        except Exception as e:  # reported on /readyz as one line; the trace goes to the server log only
            self.failed = f"loading failed ({type(e).__name__})"
            log.exception("exapt serve: loading failed")

    # -- after each forward pass ------------------------------------------------------
    def on_batch(self, predictor, out: dict, n_requests: int, n_inputs: int) -> None:
        self.metrics.batch.observe(n_inputs)
        self.metrics.batch_requests.observe(n_requests)
        self.metrics.inputs.labels(predictor.name).inc(n_inputs)
        monitor = self.monitors.get(predictor.name)
        if monitor is None or self.models.get(predictor.name) is not predictor:
            return   # a swapped-out model's last answers do not count against the new one's reference
        for emb, pred in monitor.add(out["embedding"], out["logits"]):
            self.monitor_pool.submit(self._window, predictor.name, monitor, emb, pred)

    def _window(self, name: str, monitor: DriftMonitor, emb: np.ndarray, pred: np.ndarray) -> None:
        try:
            self.metrics.window(name, monitor.evaluate(emb, pred))
        except Exception:  # a failed window never takes the server down
            log.exception("exapt serve: drift window failed")

    def close(self) -> None:
        self.monitor_pool.shutdown(wait=False, cancel_futures=True)
