"""The generation server's state for a project: the served generation model under an alias, its
engine, the prediction log writer, the alias watcher that hot swaps.

A hot swap builds the new version's :class:`~dataflywheel.serve.llm.generator.ServedGenerator`
and its own engine on the watcher's thread, starts the engine, then installs both in
:class:`~dataflywheel.serve.llm.completions.Completions` with one assignment; a request takes
the generator and engine it arrived with (``Prepared``), so sequences in flight finish on the old
model, whose engine is closed once they have.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from dataflywheel.config import FlywheelConfig
from dataflywheel.config.serving import GenerationServeConfig
from dataflywheel.feedback.completion_feedback import lazy_text_redactor
from dataflywheel.feedback.labels import FeedbackChecker
from dataflywheel.feedback.log import LogWriter
from dataflywheel.privacy import Redactor
from dataflywheel.serve.llm.adapter_swap import Adapters, SharedBase, read_adapters, served_causal_lm
from dataflywheel.serve.llm.completions import Completions, Serving
from dataflywheel.serve.llm.engine import CacheSettings, ContinuousBatchEngine
from dataflywheel.serve.llm.generator import ServedGenerator, generator_from_predictor
from dataflywheel.serve.swap import AliasWatcher
from dataflywheel.serve.worker import RetrainProcess


class GenerationServer:
    def __init__(self, cfg: FlywheelConfig, alias: str, *, log_mode: Any = "sync", swap_poll_seconds: float = 1.0,
                 threads: int | None = None, retrain: RetrainProcess | None = None) -> None:
        from dataflywheel.loop import open_project

        self.cfg = cfg
        self.retrain = retrain
        self.shared: SharedBase | None = None
        """The served base's own weights of the LoRA-adapted modules: a version of the same base
        swaps in over it (:mod:`~dataflywheel.serve.llm.adapter_swap`)."""
        self.shared_swaps = 0
        """Swaps that reused the served base instead of loading it."""
        """``flywheel serve --auto-retrain``: the retrain worker process, started and stopped with the server."""
        self.alias = alias
        self.settings: GenerationServeConfig = cfg.serve.generation
        self.threads = threads
        self.project = open_project(cfg)
        try:
            first = self._load(alias)
        except BaseException:
            self.project.close()
            raise
        self.writer = LogWriter(self.project.metadata)
        self.completions = Completions(first, self._engine(first), self.writer, log_mode=log_mode)
        self.feedback = FeedbackChecker(self.project.metadata, redactor=self._feedback_redactor)
        """Checks feedback by the task of the version that made the completion; its free text is
        redacted as the served model redacts prompts."""
        self._project_redactor = lazy_text_redactor(cfg.privacy)
        self.watcher: AliasWatcher[Serving] | None = None
        if not re.fullmatch(r"v?\d+", alias):
            self.watcher = AliasWatcher(self._alias_version, self._load_serving, self._install,
                                        version=first.version, poll_seconds=swap_poll_seconds,
                                        on_failure=lambda _v, _e: self.completions.metrics.swap_failures.inc())

    def _load(self, ref: str | int) -> ServedGenerator:
        from dataflywheel import registry
        from dataflywheel.runtime import set_threads

        adapters: Adapters | None = None
        reused = False

        def model_from(folder: Path, meta: dict[str, Any]) -> Any:
            nonlocal adapters, reused
            adapters = read_adapters(folder, meta)
            served = getattr(self, "completions", None)  # None on the first load
            if adapters is None or self.shared is None or served is None or not self.shared.fits(adapters):
                return None
            reused = True
            generator = served.generator
            return served_causal_lm(self.shared.model_for(generator.model, adapters), generator.context_tokens, meta)

        loaded = registry.load(self.project, ref, base_dir=self.cfg.base_dir, model_from=model_from)
        n_params = sum(p.numel() for p in loaded.predictor.model.parameters())
        set_threads(self.threads, n_params)
        s = self.settings
        generator = generator_from_predictor(loaded.predictor, name=self.cfg.project, max_tokens=s.max_tokens,
                                             default_max_tokens=s.default_max_tokens, aliases=(self.alias,))
        if reused:
            self.shared_swaps += 1
        else:  # a model loaded whole: the base of the swaps to come
            self.shared = None if adapters is None else SharedBase(generator.model, adapters)
        return generator

    def _feedback_redactor(self) -> Redactor | None:
        """The served model's redactor; when it redacts no prompt, the project's ``privacy``."""
        return self.completions.generator.redactor or self._project_redactor()

    def _engine(self, generator: ServedGenerator) -> ContinuousBatchEngine:
        return ContinuousBatchEngine(generator.model, generator.eos_ids, CacheSettings.from_config(self.settings))

    # -- hot swap --------------------------------------------------------------------------------
    def _alias_version(self) -> int | None:
        from dataflywheel.registry.versions import alias_version

        return alias_version(self.project, self.alias)

    def _load_serving(self, version: int) -> Serving:
        generator = self._load(version)
        return Serving(generator, self._engine(generator).start())

    def _install(self, serving: Serving, version: int) -> None:
        old = self.completions.serving
        self.completions.serving = serving
        m = self.completions.metrics
        m.model_version.set(version)
        m.swaps.inc()
        threading.Thread(target=_close_when_idle, args=(old.engine,), name="flywheel-engine-retire",
                         daemon=True).start()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.writer.start()
        self.completions.engine.start()
        self.completions.metrics.model_version.set(self.completions.generator.version or 0)
        if self.watcher is not None:
            self.watcher.start()
        if self.retrain is not None:
            self.retrain.start()

    def close(self) -> None:
        if self.retrain is not None:
            self.retrain.stop()
        if self.watcher is not None:
            self.watcher.close()
        self.completions.engine.close()
        self.writer.close()
        self.project.close()

    def not_ready(self) -> list[str]:
        reasons = []
        if not self.completions.engine.alive:
            reasons.append("generation engine not running")
        if not self.writer.alive:
            reasons.append("prediction log writer not running")
        return reasons


def _close_when_idle(engine: ContinuousBatchEngine, timeout: float = 600.0) -> None:
    """Close a swapped-out engine once its sequences have finished (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while engine.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    engine.close()
