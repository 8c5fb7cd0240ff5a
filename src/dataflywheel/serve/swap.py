"""Hot swap: follow an alias in the store and switch the served model without downtime.

:class:`AliasWatcher` runs a daemon thread that reads the alias every ``poll_seconds``. When it
points at another version (a promote or rollback from any process), the watcher loads that
version on its own thread, while requests keep being served by the current model, and then
installs it with one reference assignment. A request reads the served model once, when it
arrives, and runs on it to the end, so requests in flight finish on the old model and new ones
use the new model: no request fails or waits for the load. A version that fails to load is
not retried until the alias moves again (or :meth:`AliasWatcher.check` is forced); the old
model keeps serving. The watcher is a periodic :class:`~dataflywheel.workers.Worker`: its queue
only carries the stop signal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from dataflywheel.workers import Worker

M = TypeVar("M")
log = logging.getLogger("dataflywheel.serve")


@dataclass
class SwapResult:
    previous: int | None
    version: int | None
    swapped: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AliasWatcher(Worker, Generic[M]):
    """Poll ``current()`` (the version the alias points at); on a change, ``load`` it and ``install`` it.

    ``version`` is the version being served. ``on_failure(version, exc)`` is told about loads
    that fail.
    """

    name = "flywheel-swap"

    def __init__(
        self,
        current: Callable[[], int | None],
        load: Callable[[int], M],
        install: Callable[[M, int], None],
        *,
        version: int | None,
        poll_seconds: float = 1.0,
        on_failure: Callable[[int, BaseException], None] | None = None,
    ) -> None:
        super().__init__()
        self.current = current
        self.load = load
        self.install = install
        self.version = version
        self.poll_seconds = poll_seconds
        self.on_failure = on_failure
        self.last_error: str | None = None
        self._failed: int | None = None
        self._check_lock = threading.Lock()

    def check(self, *, force: bool = False) -> SwapResult:
        """Swap now if the alias moved (``force`` retries a version that failed to load)."""
        with self._check_lock:
            previous = self.version
            target = self.current()
            if target is None or target == previous or (target == self._failed and not force):
                return SwapResult(previous, previous, False, self.last_error if target == self._failed else None)
            try:
                model = self.load(target)
            except Exception as exc:  # noqa: BLE001 - keep serving the old model
                self._failed, self.last_error = target, f"v{target} failed to load: {exc}"
                log.error("hot swap: %s; still serving v%s", self.last_error, previous)
                if self.on_failure is not None:
                    self.on_failure(target, exc)
                return SwapResult(previous, previous, False, self.last_error)
            self.install(model, target)
            self.version, self._failed, self.last_error = target, None, None
            log.info("hot swap: v%s -> v%s", previous, target)
            return SwapResult(previous, target, True)

    def run(self) -> None:
        while self.wait(self.poll_seconds):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - e.g. the store is briefly locked: try again next poll
                log.exception("hot swap: checking the alias failed")
