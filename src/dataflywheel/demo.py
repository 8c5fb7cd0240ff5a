"""``flywheel demo``: one full turn of the loop on breast cancer, in about a minute.

1. v1 is trained on a small initial slice of the data and becomes champion.
2. The server starts on 127.0.0.1; a simulated application sends the remaining rows as traffic
   and returns the true label for part of them as feedback.
3. Retraining builds the next dataset version (initial slice + labelled feedback), trains v2,
   and the gate compares v2 with v1 on the same frozen test split.
4. If v2 passes, it is promoted; the server hot-swaps to it and the last traffic runs on v2.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

DEMO_YAML = """\
# Written by `flywheel demo`: breast cancer, v1 trained on a small initial slice.
project: flywheel-demo
data:
  source: initial.csv
  target: target
  split: {{train: 0.6, valid: 0.2, test: 0.2, seed: 42}}
model:
  type: mlp
  params: {{hidden: [64, 64]}}
train: {{epochs: 60, batch_size: 32, lr: 0.001, seed: 0, early_stopping: {{patience: 10}}}}
evaluate: {{metric: roc_auc, min_improvement: 0.0, tolerance: 0.02, feedback_holdout: 0.2}}
retrain: {{every_n_labels: 50}}
serve: {{port: {port}, swap_poll_seconds: 0.2}}
"""


@dataclass
class DemoResult:
    folder: Path
    versions: list[dict[str, Any]] = field(default_factory=list)
    served: Counter[int] = field(default_factory=Counter)
    predictions: int = 0
    feedback: int = 0
    report: Path | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(folder: Path, initial: int, seed: int, port: int) -> list[dict[str, Any]]:
    """Write the initial slice and flywheel.yaml; return the rest of the rows as traffic."""
    import numpy as np
    import polars as pl

    from dataflywheel.data.examples import load_example

    df = load_example("breast_cancer")
    order = np.random.default_rng(seed).permutation(df.height)
    folder.mkdir(parents=True, exist_ok=True)
    df[order[:initial]].write_csv(folder / "initial.csv")
    (folder / "flywheel.yaml").write_text(DEMO_YAML.format(port=port), encoding="utf-8")
    return df[order[initial:]].to_dicts() if isinstance(df, pl.DataFrame) else []


class BackgroundServer:
    """uvicorn on 127.0.0.1 in a thread, stopped on exit."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        # log_config=None: uvicorn's own logging config would reset every handler of the process
        # (logging.config.dictConfig closes them all), the caller's included.
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    log_config=None))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the demo server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def send_traffic(client: Any, url: str, rows: list[dict[str, Any]], target: str, label_share: float,
                 result: DemoResult, seed: int) -> None:
    """The simulated application: predict each row, then return true labels for some."""
    import random

    rng = random.Random(seed)
    for row in rows:
        features = {k: v for k, v in row.items() if k != target}
        r = client.post(f"{url}/v1/predict", json=features)
        r.raise_for_status()
        body = r.json()
        result.predictions += 1
        result.served[body["model_version"]] += 1
        if rng.random() < label_share:
            fb = client.post(f"{url}/v1/feedback", json={"prediction_id": body["prediction_id"],
                                                         "label": str(row[target])})
            fb.raise_for_status()
            result.feedback += 1


def wait_for_version(client: Any, url: str, version: int, timeout: float = 30.0) -> bool:
    """Wait until the server reports ``version`` (the hot swap after a promotion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"{url}/v1/model").json().get("version") == version:
            return True
        time.sleep(0.1)
    return False


def version_rows(project: Any) -> list[dict[str, Any]]:
    from dataflywheel.registry import versions

    rows = []
    for v in versions.list_versions(project):
        verdict = v.verdict or {}
        rows.append({"version": v.version, "dataset": v.dataset_id, "aliases": ", ".join(v.aliases),
                     "roc_auc": v.metrics.get("roc_auc"), "accuracy": v.metrics.get("accuracy"),
                     "train_rows": None, "decision": verdict.get("decision", ""),
                     "gate": _gate_line(verdict)})
    return rows


def _gate_line(verdict: dict[str, Any]) -> str:
    ours, theirs = verdict.get("challenger"), verdict.get("champion")
    if ours is None or theirs is None:
        return ""
    return f"{verdict.get('metric')} {ours:.4f} vs v{verdict.get('champion_version')} {theirs:.4f}"


def run_demo(folder: Path, *, initial: int = 120, label_share: float = 0.6, seed: int = 0,
             log: Any = print) -> DemoResult:
    """One turn of the loop (module docstring); returns what happened, for the summary table."""
    import httpx

    from dataflywheel.config import load_config
    from dataflywheel.data.dataset import get_version
    from dataflywheel.feedback.retrain import retrain
    from dataflywheel.loop import open_project
    from dataflywheel.loop import run as run_loop
    from dataflywheel.serve.app import create_app

    if (folder / ".flywheel").exists():
        from dataflywheel.errors import FlywheelError

        raise FlywheelError("already holds a flywheel project", where=str(folder),
                            fix="pass another --folder or remove it")
    port = free_port()
    traffic = prepare(folder, initial, seed, port)
    cfg = load_config(folder / "flywheel.yaml")
    target = cfg.data.target
    result = DemoResult(folder)
    log(f"1/4 training v1 on an initial slice of {initial} rows")
    run_loop(cfg, progress=False, log=log)

    first, rest = traffic[: int(len(traffic) * 0.8)], traffic[int(len(traffic) * 0.8):]
    with BackgroundServer(create_app(cfg), port) as server, httpx.Client(timeout=30) as client:
        log(f"2/4 serving v1 at {server.url}; the application sends {len(first)} requests and "
            f"returns true labels for about {label_share:.0%} of them")
        send_traffic(client, server.url, first, target, label_share, result, seed)
        log(f"3/4 retraining from {result.feedback} labelled feedback rows")
        project = open_project(cfg)
        try:
            outcome = retrain(cfg, project, log=log)
        finally:
            project.close()
        if outcome.decision == "promoted" and outcome.version is not None:
            swapped = wait_for_version(client, server.url, outcome.version)
            log(f"4/4 v{outcome.version} promoted; the server {'switched to it' if swapped else 'did not switch'}"
                f" without a restart; {len(rest)} more requests")
        else:
            log(f"4/4 the gate kept the champion ({outcome.message}); {len(rest)} more requests")
        send_traffic(client, server.url, rest, target, label_share, result, seed + 1)

    project = open_project(cfg)
    try:
        result.versions = version_rows(project)
        for row in result.versions:
            row["train_rows"] = get_version(project, row["dataset"]).split_sizes.get("train")
        from dataflywheel.registry import versions

        champion = versions.resolve(project, "champion")
        result.report = project.artifacts.path(champion.artifact) / "report.html"
    finally:
        project.close()
    return result


def print_summary(result: DemoResult, console: Console) -> None:
    from rich.table import Table

    table = Table(title="flywheel demo: one turn of the loop")
    for col in ("version", "dataset", "train rows", "test ROC AUC", "test accuracy", "aliases", "gate"):
        table.add_column(col)

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    for r in result.versions:
        gate = r["decision"] + (f" ({r['gate']})" if r["gate"] else "")
        table.add_row(f"v{r['version']}", r["dataset"], str(r["train_rows"]), fmt(r["roc_auc"]),
                      fmt(r["accuracy"]), r["aliases"], gate)
    console.print(table)
    served = ", ".join(f"v{v}: {n}" for v, n in sorted(result.served.items()))
    console.print(f"traffic: {result.predictions} predictions ({served}), {result.feedback} labelled feedback rows",
                  markup=False)
    console.print(f"report: {result.report}", markup=False)
    console.print(f"project: {result.folder} (try `flywheel models list` or `flywheel lineage PREDICTION_ID` there)",
                  markup=False)
