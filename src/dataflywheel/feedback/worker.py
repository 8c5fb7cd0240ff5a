"""The automatic retrain loop, in its own process: ``python -m dataflywheel.feedback.worker --config PATH``.

Every ``retrain.poll_seconds`` it checks the trigger policy of flywheel.yaml and, when it fires,
runs :func:`~dataflywheel.feedback.retrain.retrain` (never on a server's request path: the
server only sees the alias move and hot-swaps). Triggers:

* ``retrain.every_n_labels``: at least that many labelled feedback rows no settled dataset
  version has seen yet (:func:`~dataflywheel.feedback.trainingset.new_label_count`: the rows of
  a retrain that did not finish count);
* ``retrain.drift_threshold``: ``max_psi`` of ``dataflywheel.feedback.monitor.monitor_report``
  (the champion's training data against the last ``monitor.window`` served inputs) exceeds it,
  and there is at least one new label (retraining without new labels would reproduce the
  champion). Skipped when the monitor is not installed or fails.

The loop is bounded (``--max-iterations``, ``--max-seconds``) and stops cleanly on SIGTERM or
SIGINT, finishing a retrain already under way. A retrain that fails is logged and retried at
the next trigger, not fatal.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataflywheel.config import FlywheelConfig
from dataflywheel.errors import FlywheelError
from dataflywheel.store import Project

Log = Callable[[str], None]


def _max_psi(report: Any) -> float | None:
    """The largest PSI in a monitor report: an object or dict with ``max_psi``, or per-feature
    entries (a list or a dict) carrying ``psi``."""
    if report is None:
        return None
    direct = report.get("max_psi") if isinstance(report, dict) else getattr(report, "max_psi", None)
    if isinstance(direct, (int, float)):
        return float(direct)
    features = report.get("features") if isinstance(report, dict) else getattr(report, "features", None)
    if features is None and isinstance(report, dict):
        features = report.get("drift")
    entries = features.values() if isinstance(features, dict) else (features or [])
    values = []
    for e in entries:
        psi = e.get("psi") if isinstance(e, dict) else getattr(e, "psi", None)
        if isinstance(psi, (int, float)) and math.isfinite(psi):
            values.append(float(psi))
    return max(values) if values else None


def drift_score(cfg: FlywheelConfig, project: Project, log: Log) -> float | None:
    """The largest feature PSI now, or None when the monitor is unavailable or has no data."""
    try:
        from dataflywheel.feedback.monitor import monitor_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        from dataflywheel import registry
        from dataflywheel.registry import versions

        predictor = registry.load(project, versions.CHAMPION, base_dir=cfg.base_dir).predictor
        return _max_psi(monitor_report(project, predictor, cfg.monitor.window, cfg.monitor.bins))
    except Exception as exc:  # noqa: BLE001 - the drift trigger is best effort
        log(f"drift check failed ({type(exc).__name__}: {exc}); skipping the drift trigger")
        return None


def trigger(cfg: FlywheelConfig, project: Project, log: Log = lambda _m: None) -> str | None:
    """Why a retrain is due now (a sentence), or None."""
    from dataflywheel.feedback.trainingset import new_label_count

    policy = cfg.retrain
    new = new_label_count(project)
    if policy.every_n_labels is not None and new >= policy.every_n_labels:
        return f"{new} new labelled feedback rows (every_n_labels {policy.every_n_labels})"
    if policy.drift_threshold is not None and new > 0:
        psi = drift_score(cfg, project, log)
        if psi is not None and psi > policy.drift_threshold:
            return f"drift: max PSI {psi:.3f} > {policy.drift_threshold:g} with {new} new labels"
    return None


def run_worker(
    cfg: FlywheelConfig,
    *,
    stop: threading.Event | None = None,
    max_iterations: int | None = None,
    max_seconds: float | None = None,
    log: Log = print,
) -> int:
    """Poll and retrain until ``stop`` is set or a bound is reached; return the retrains run."""
    from dataflywheel.feedback.retrain import retrain
    from dataflywheel.loop import open_project

    stop = stop or threading.Event()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    retrains = iterations = 0
    project = open_project(cfg)
    log(f"polling every {cfg.retrain.poll_seconds:g}s (every_n_labels {cfg.retrain.every_n_labels}, "
        f"drift_threshold {cfg.retrain.drift_threshold})")
    try:
        while not stop.is_set():
            try:
                reason = trigger(cfg, project, log)
                if reason is not None:
                    log(f"retrain triggered: {reason}")
                    result = retrain(cfg, project, log=log)
                    retrains += result.status == "trained"
            except FlywheelError as exc:
                log(f"retrain failed: {exc.headline()}")
            iterations += 1
            if max_iterations is not None and iterations >= max_iterations:
                break
            wait = cfg.retrain.poll_seconds
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            stop.wait(wait)
    finally:
        project.close()
    return retrains


def main(argv: list[str] | None = None) -> int:
    from dataflywheel.config import load_config

    parser = argparse.ArgumentParser(prog="python -m dataflywheel.feedback.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--config", "-c", type=Path, default=Path("flywheel.yaml"))
    parser.add_argument("--max-iterations", type=int, default=None, help="stop after this many polls")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_a: stop.set())

    def log(msg: str) -> None:
        print(f"[retrain-worker] {msg}", flush=True)

    try:
        cfg = load_config(args.config)
        n = run_worker(cfg, stop=stop, max_iterations=args.max_iterations, max_seconds=args.max_seconds, log=log)
    except FlywheelError as exc:
        print(f"error: {exc.headline()}", file=sys.stderr)
        return exc.exit_code
    log(f"stopped after {n} retrain(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
