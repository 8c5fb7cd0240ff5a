"""What a prediction server holds, without HTTP: the project, the served model, the engine, the
log writer, the alias watcher (hot swap), the predict pipeline over them, the metrics and,
with auto-retrain, the retrain worker process. ``serve.app`` puts routes in front of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from dataflywheel.config import AuthConfig, Backend, FlywheelConfig, ServeConfig
from dataflywheel.feedback.completion_feedback import lazy_text_redactor
from dataflywheel.feedback.labels import FeedbackChecker
from dataflywheel.feedback.log import LogWriter
from dataflywheel.serve.engine import Engine, MicroBatchEngine
from dataflywheel.serve.metrics import ServeMetrics
from dataflywheel.serve.model import ServedModel, load_served_model
from dataflywheel.serve.pipeline import PredictPipeline
from dataflywheel.serve.swap import AliasWatcher
from dataflywheel.serve.worker import RetrainProcess


@dataclass
class ServeSettings:
    """The server's knobs; :meth:`from_config` reads them from flywheel.yaml's ``serve`` section."""

    max_batch_size: int = 64
    """Most records in one forward pass."""
    max_wait_ms: float = 0.0
    """How long a batch with concurrent requests waits for more (a lone request never waits)."""
    max_records: int = 1000
    """Most records in one request (more is a 413)."""
    max_body_bytes: int = 1_048_576
    """Largest request body (more is a 413)."""
    log_mode: Literal["sync", "async"] = "sync"
    """sync: answer after the prediction rows are committed; async: answer at once."""
    swap_poll_seconds: float = 1.0
    """How often the alias is checked for a hot swap."""
    max_commit_group: int = 1024
    """Most log writes committed in one transaction."""
    threads: int | None = None
    """torch intra-op threads; None picks by model size (see dataflywheel.runtime)."""
    backend: Backend = "torch"
    """What runs the network: torch fp32, int8 dynamic quantisation, ONNX Runtime fp32 or int8."""
    device: str = "auto"
    """Where the torch backend runs (``serve.device``; see :func:`~dataflywheel.serve.model.serve_device`)."""
    auth: AuthConfig = field(default_factory=AuthConfig)
    """Which route classes need the bearer token when one is set (``serve.auth``, see ``serve.auth``)."""

    @classmethod
    def from_config(cls, serve: ServeConfig, **overrides: Any) -> ServeSettings:
        values = {f.name: getattr(serve, f.name) for f in fields(cls) if f.name in type(serve).model_fields}
        return cls(**(values | overrides))


class Server:
    """The serving state and its threads' lifecycle (see the module docstring). ``engine``
    defaults to a :class:`~dataflywheel.serve.engine.MicroBatchEngine` with the settings' batching."""

    def __init__(self, cfg: FlywheelConfig, alias: str, settings: ServeSettings,
                 retrain: RetrainProcess | None = None, engine: Engine | None = None) -> None:
        from dataflywheel.loop import open_project

        self.cfg = cfg
        self.settings = settings
        self.alias = alias
        self.metrics = ServeMetrics()
        self.retrain = retrain
        self.project = open_project(cfg)
        try:
            model = load_served_model(self.project, alias, threads=settings.threads, backend=settings.backend,
                                      device=settings.device)
        except BaseException:
            self.project.close()
            raise
        self.metrics.model_version.set(model.version or 0)
        self.engine: Engine = engine or MicroBatchEngine(
            max_batch_size=settings.max_batch_size, max_wait_ms=settings.max_wait_ms,
            on_batch=self.metrics.batch_size.observe, on_truncated=self.metrics.truncated_texts.inc)
        self.writer = LogWriter(self.project.metadata, max_group=settings.max_commit_group)
        self.labels = FeedbackChecker(self.project.metadata, redactor=lazy_text_redactor(cfg.privacy))
        """Checks feedback by the task of the version that made the prediction (a comment's text
        redacted by the project's ``privacy`` settings)."""
        self.pipeline = PredictPipeline(model, self.engine, self.writer, log_mode=settings.log_mode,
                                        max_records=settings.max_records, metrics=self.metrics)
        self.watcher: AliasWatcher[ServedModel] | None = None
        if not re.fullmatch(r"v?\d+", alias):  # a fixed version never moves
            self.watcher = AliasWatcher(self._alias_version, self._load, self._install, version=model.version,
                                        poll_seconds=settings.swap_poll_seconds,
                                        on_failure=lambda _v, _e: self.metrics.swap_failures.inc())

    @property
    def model(self) -> ServedModel:
        """The model new requests are validated against and run on (the pipeline's)."""
        return self.pipeline.model

    @model.setter
    def model(self, model: ServedModel) -> None:
        self.pipeline.model = model  # one reference assignment: atomic for every reader

    # -- hot swap ------------------------------------------------------------------------------
    def _alias_version(self) -> int | None:
        from dataflywheel.registry.versions import alias_version

        return alias_version(self.project, self.alias)

    def _load(self, version: int) -> ServedModel:
        return load_served_model(self.project, version, threads=self.settings.threads,
                                 backend=self.settings.backend, device=self.settings.device)

    def _install(self, model: ServedModel, version: int) -> None:
        self.model = model
        self.metrics.model_version.set(version)
        self.metrics.swaps.inc()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.writer.start()
        self.engine.start()
        if self.watcher is not None:
            self.watcher.start()
        if self.retrain is not None:
            self.retrain.start()

    def close(self) -> None:
        if self.retrain is not None:
            self.retrain.stop()
        if self.watcher is not None:
            self.watcher.close()
        self.engine.close()
        self.writer.close()
        self.project.close()

    def not_ready(self) -> list[str]:
        reasons = []
        if not self.engine.alive:
            reasons.append("model worker not running")
        if not self.writer.alive:
            reasons.append("prediction log writer not running")
        return reasons
