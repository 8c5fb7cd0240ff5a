"""The retrain worker as a child process of the server (``flywheel serve --auto-retrain``).

Retraining never runs on the request path: it runs in its own process
(``python -m dataflywheel.feedback.worker --config FILE``), started and stopped with the server.
When it promotes a new champion, the server's :class:`~dataflywheel.serve.swap.AliasWatcher`
notices and swaps. A missing worker module is logged and tolerated: the server still serves.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

MODULE = "dataflywheel.feedback.worker"
log = logging.getLogger("dataflywheel.serve")


class RetrainProcess:
    def __init__(self, config_path: str | Path, module: str = MODULE) -> None:
        self.config_path = Path(config_path)
        self.module = module
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RetrainProcess:
        if self.process is not None:
            return self
        if importlib.util.find_spec(self.module) is None:
            log.warning("auto-retrain: %s is not installed; serving without retraining", self.module)
            return self
        self.process = subprocess.Popen([sys.executable, "-m", self.module, "--config", str(self.config_path)])
        log.info("auto-retrain: worker started (pid %s)", self.process.pid)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the worker (SIGTERM, then SIGKILL after ``timeout``); its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        return process.returncode
