"""The generation server's Prometheus metrics: the classifier server's request metrics plus
tokens generated, time to first token, inter-token latency, and the engine's batch: sequences
decoding, sequences waiting for the KV cache and the share of the cache in use (read from the
engine's scheduler at each scrape)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from dataflywheel.serve.metrics import ServeMetrics

TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class GenerationMetrics(ServeMetrics):
    def __init__(self, scheduled: Callable[[], tuple[int, int, float]] | None = None) -> None:
        super().__init__()
        r = self.registry
        self.tokens = Counter("flywheel_generated_tokens", "Tokens generated (all choices)", registry=r)
        self.ttft = Histogram("flywheel_time_to_first_token_seconds", "Request to its first generated text",
                              buckets=TOKEN_BUCKETS, registry=r)
        self.inter_token = Histogram("flywheel_inter_token_seconds", "Gap between a sequence's consecutive steps",
                                     buckets=TOKEN_BUCKETS, registry=r)
        self.running = Gauge("flywheel_generation_running", "Sequences in the decode batch", registry=r)
        self.waiting = Gauge("flywheel_generation_waiting", "Sequences waiting for room in the KV cache", registry=r)
        self.cache_used = Gauge("flywheel_kv_cache_used_ratio", "Share of the KV cache in use", registry=r)
        self.scheduled = scheduled

    def render(self) -> tuple[bytes, str]:
        if self.scheduled is not None:
            running, waiting, used = self.scheduled()
            self.running.set(running)
            self.waiting.set(waiting)
            self.cache_used.set(used)
        return super().render()
