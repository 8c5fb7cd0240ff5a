"""Prometheus metrics of one server, on its own registry (two apps in one process never mix).

:class:`ServeMetrics` holds the instruments; :class:`MetricsMiddleware` (pure ASGI, so it
costs a few microseconds, not a Starlette request object) counts and times every request.
Endpoints outside the app's known routes are counted as ``other`` so a scanner cannot blow
up the label cardinality.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dataflywheel.serve.asgi import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServeMetrics:
    """The server's instruments, all prefixed ``flywheel_``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("flywheel_requests", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=r)
        self.errors = Counter("flywheel_errors", "HTTP responses with a 4xx or 5xx status",
                              ["endpoint", "status"], registry=r)
        self.latency = Histogram("flywheel_request_latency_seconds", "Time from request to response end",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("flywheel_batch_size", "Records per forward pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.predictions = Counter("flywheel_predictions", "Records predicted", registry=r)
        self.log_failures = Counter("flywheel_log_failures", "Prediction log writes that failed", registry=r)
        self.model_version = Gauge("flywheel_model_version", "Model version being served", registry=r)
        self.swaps = Counter("flywheel_model_swaps", "Hot swaps to another model version", registry=r)
        self.swap_failures = Counter("flywheel_model_swap_failures", "Model versions that failed to load",
                                     registry=r)
        self.truncated_texts = Counter("flywheel_truncated_texts", "Texts cut to the model's max_length",
                                       registry=r)
        self.redactions = Counter("flywheel_redactions", "PII matches redacted from request fields", ["kind"],
                                  registry=r)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram, Counter | None]] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a dict lookup: cache the children
            err = self.errors.labels(endpoint, str(status)) if status >= 400 else None
            children = (self.requests.labels(endpoint, method, str(status)), self.latency.labels(endpoint), err)
            self._children[key] = children
        count, latency, err = children
        count.inc()
        latency.observe(seconds)
        if err is not None:
            err.inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Count and time every HTTP request into :class:`ServeMetrics`."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, endpoints: Iterable[str] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = frozenset(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            endpoint = path if path in self.endpoints else "other"
            self.metrics.observe(endpoint, scope["method"], status, time.perf_counter() - started)
