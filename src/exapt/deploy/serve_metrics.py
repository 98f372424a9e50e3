"""The server's Prometheus metrics (prometheus-client), safe under --workers N.

With several workers, `exapt serve` sets PROMETHEUS_MULTIPROC_DIR before any worker
starts: each process then writes its values to files there and `/metrics`, whichever
worker answers, reads them all (prometheus-client's multiprocess mode). Drift gauges are
per worker (each keeps its own windows), labelled by its pid.
"""
from __future__ import annotations

import os

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self):
        # after the supervisor set PROMETHEUS_MULTIPROC_DIR, which prometheus-client reads on import
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram  # heavy: imported on first use

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()   # one per app: two servers in one process never collide
        r = self.registry
        self.requests = Counter("exapt_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=r)
        self.latency = Histogram("exapt_request_seconds", "Request latency (seconds) by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.inputs = Counter("exapt_inputs", "Inputs predicted, by served model", ["model"], registry=r)
        self.batch = Histogram("exapt_batch_inputs", "Inputs per forward pass (dynamic batching)",
                               buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("exapt_batch_requests", "Requests merged per forward pass",
                                        buckets=BATCH_BUCKETS, registry=r)
        live = {"multiprocess_mode": "liveall"} if self.multiprocess else {}
        self.ready = Gauge("exapt_ready", "1 once the model is loaded and warmed", registry=r, **live)
        self.drift_p = Gauge("exapt_drift_input_p_value", "Last window's MMD permutation p-value", ["model"],
                             registry=r, **live)
        self.drift_auc = Gauge("exapt_drift_domain_auc", "Last window's domain-classifier AUC", ["model"],
                               registry=r, **live)
        self.class_p = Gauge("exapt_drift_predicted_class_p_value",
                             "Last window's chi-square p-value, predicted classes vs the reference", ["model"],
                             registry=r, **live)
        self.tv_bbse = Gauge("exapt_drift_label_shift_tv", "Total variation of the BBSE priors from the source's",
                             ["model"], registry=r, **live)
        self.alarm = Gauge("exapt_drift_alarm", "1 while the drift alarm is raised", ["model"], registry=r, **live)
        self.windows = Counter("exapt_drift_windows", "Drift windows evaluated", ["model"], registry=r)

    def window(self, model: str, result) -> None:
        if result.mmd_p is not None:
            self.drift_p.labels(model).set(result.mmd_p)
        if result.auc is not None:
            self.drift_auc.labels(model).set(result.auc)
        if result.predicted_p is not None:
            self.class_p.labels(model).set(result.predicted_p)
        if result.tv_bbse is not None:
            self.tv_bbse.labels(model).set(result.tv_bbse)
        self.alarm.labels(model).set(1.0 if result.alarm else 0.0)
        self.windows.labels(model).inc()

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest  # heavy: imported on first use
        from prometheus_client.multiprocess import MultiProcessCollector  # heavy: imported on first use

        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return generate_latest(merged), CONTENT_TYPE_LATEST
