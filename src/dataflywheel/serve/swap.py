"""Hot swap: follow an alias in the store and switch the served model without downtime.

:class:`AliasWatcher` runs a daemon thread that reads the alias every ``poll_seconds``. When it
points at another version (a promote or rollback from any process), the watcher loads that
version on its own thread, while requests keep being served by the current model, and then
installs it with one reference assignment. A request reads the served model once, when it
arrives, and runs on it to the end, so requests in flight finish on the old model and new ones
use the new model: no request fails or waits for the load. A version that fails to load is
not retried until the alias moves again (or :meth:`AliasWatcher.check` is forced); the old
model keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

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


class AliasWatcher(Generic[M]):
    """Poll ``current()`` (the version the alias points at); on a change, ``load`` it and ``install`` it.

    ``version`` is the version being served. ``on_failure(version, exc)`` is told about loads
    that fail.
    """

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
        self.current = current
        self.load = load
        self.install = install
        self.version = version
        self.poll_seconds = poll_seconds
        self.on_failure = on_failure
        self.last_error: str | None = None
        self._failed: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AliasWatcher[M]:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="flywheel-swap", daemon=True)
            self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def check(self, *, force: bool = False) -> SwapResult:
        """Swap now if the alias moved (``force`` retries a version that failed to load)."""
        with self._lock:
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

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - e.g. the store is briefly locked: try again next poll
                log.exception("hot swap: checking the alias failed")
