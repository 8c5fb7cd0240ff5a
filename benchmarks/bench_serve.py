"""Serving benchmark, one run, all against 127.0.0.1, bounded.

Requests/s and p50/p99 latency at concurrency 1, 8 and 64 for
  (a) our server (`flywheel serve`: micro-batching, schema validation, every prediction logged
      with an id, `log_mode: sync`: the answer waits for the row's commit),
  (b) what a user writes instead: a hand-written FastAPI endpoint over the raw network (a
      pydantic record of the 30 fields, NumPy standardisation with the training statistics,
      the torch MLP loaded from the bundle's safetensors, `async def`, no logging), on one
      uvicorn worker and (c) on two (`--workers 2`),
and (d) the model's in-process throughput at batch 1 and 1024 (the limit), plus acknowledged
feedback writes/s on SQLite. Load comes from wrk (Debian package `wrk`) in its own process,
one thread, for a few seconds per point. ``--predictor-baseline`` adds the endpoint over our
own Predictor that earlier versions compared against (it measures our code against itself).

    python benchmarks/bench_serve.py [--seconds 5] [--repeats 3]

The servers run side by side and the points alternate between them (median of the repeats),
so a busy neighbour on a shared machine weighs on all alike.

Targets (issue 15): (a)/(b) >= 1.0 at concurrency 1 with (a) p99 <= 3 ms, >= 2.0 at concurrency
64; feedback >= 2,000 acknowledged rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

HAND_APP = '''
"""What a user writes instead of `flywheel serve`: the raw network behind FastAPI."""
import json
import os
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, create_model
from safetensors.torch import load_file
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
bundle = Path(os.environ["BUNDLE"])
data = load_breast_cancer()
names = list(data.feature_names)
train, _ = train_test_split(data.data, train_size=0.7, random_state=42)
mean, std = train.mean(axis=0), train.std(axis=0)  # standardise with the training statistics


class MLP(torch.nn.Module):
    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.body = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(widths[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


hidden = json.loads((bundle / "model.json").read_text())["spec"]["args"]["hidden"]
net = MLP([len(names), *hidden])
net.load_state_dict(load_file(bundle / "model.safetensors"))
net.eval()
fields = {f"f{i}": (float, Field(alias=name)) for i, name in enumerate(names)}
Record = create_model("Record", __config__=ConfigDict(populate_by_name=True), **fields)
app = FastAPI()


@app.post("/predict")
async def predict(record: Record) -> dict:
    x = (np.array([getattr(record, f"f{i}") for i in range(len(names))]) - mean) / std
    with torch.inference_mode():
        p = float(torch.sigmoid(net(torch.from_numpy(x[None, :].astype(np.float32))))[0, 0])
    return {"prediction": int(p >= 0.5), "probability": p}
'''

NAIVE_APP = '''
import os
from fastapi import FastAPI, Request
from dataflywheel.registry.predictor import Predictor
import torch
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
predictor = Predictor.load(os.environ["BUNDLE"])
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    record = await request.json()
    p = predictor.predict([record])
    return {"prediction": p.values[0], "probabilities": dict(zip(p.class_names, p.proba[0].tolist()))}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 60, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers; fail at once, with the end of its log, if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            log = getattr(proc, "log_path", None)
            tail = Path(log).read_text(errors="replace")[-2000:] if log else ""
            raise SystemExit(f"server for {url} exited with code {proc.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {url} did not come up")


def start(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``cmd`` in its own process group; its stderr goes to a temp file (``proc.log_path``)."""
    fd, log = tempfile.mkstemp(prefix="bench-server-", suffix=".log")
    with os.fdopen(fd, "w") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log = getattr(proc, "log_path", None)
    if log:
        Path(log).unlink(missing_ok=True)


def wrk(url: str, script: Path, conns: int, seconds: int, timeout: int = 2) -> dict[str, float]:
    """One wrk run; a request unanswered after ``timeout`` seconds counts as an error."""
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"--timeout={timeout}s", "--latency", "-s",
                          str(script), url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        return float(m.group(1)) * scale

    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = int(errors.group(1)) if errors else 0
    if socket_errors:
        bad += sum(int(g) for g in socket_errors.groups())
    total = re.search(r"(\d+) requests in", out)
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "errors": bad, "requests": int(total.group(1))}


def post_script(folder: Path, name: str, body: dict) -> Path:
    path = folder / f"{name}.lua"
    payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    path.write_text(f"wrk.method = 'POST'\nwrk.body = '{payload}'\nwrk.headers['Content-Type'] = 'application/json'\n")
    return path


def feedback_script(folder: Path, ids: list[str]) -> Path:
    path = folder / "feedback.lua"
    lua_ids = ",".join(f'"{i}"' for i in ids)
    path.write_text(
        f"local ids = {{{lua_ids}}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n  local id = ids[(i % #ids) + 1]\n"
        "  return wrk.format('POST', '/v1/feedback', {['Content-Type'] = 'application/json'},"
        " '{\"prediction_id\":\"' .. id .. '\",\"label\":\"1\"}')\nend\n")
    return path


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median requests/s (its own latencies), errors summed over all runs."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    return ordered[len(ordered) // 2] | {"errors": sum(r["errors"] for r in runs)}


def folder_script(folder: Path) -> Path:
    path = folder / "get.lua"
    path.write_text("wrk.method = 'GET'\n")
    return path


def in_process(bundle: Path) -> dict[str, float]:
    import polars as pl
    import torch

    from dataflywheel.registry.predictor import Predictor

    torch.set_num_threads(1)
    p = Predictor.load(bundle)
    test = pl.read_parquet(next((bundle.parents[1] / "datasets").iterdir()) / "test.parquet").drop("target")
    out = {}
    for size in (1, 1024):
        batch = pl.concat([test] * (size // test.height + 1)).head(size)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            p.scores(batch)
            n += size
        out[size] = n / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="runs per point, alternating servers; medians shown")
    ap.add_argument("--predictor-baseline", action="store_true",
                    help="also the endpoint over our own Predictor (earlier versions' baseline)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    from rich.console import Console
    from rich.table import Table

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    shutil.copy(ROOT / "examples" / "breast-cancer" / "flywheel.yaml", tmp / "flywheel.yaml")
    subprocess.run([str(BIN / "flywheel"), "run", "--no-progress"], cwd=tmp, check=True, capture_output=True)
    bundle = tmp / ".flywheel" / "artifacts" / "models" / "v1"
    (tmp / "hand_app.py").write_text(HAND_APP)
    (tmp / "naive_app.py").write_text(NAIVE_APP)
    from sklearn.datasets import load_breast_cancer

    bc = load_breast_cancer()
    record = dict(zip(bc.feature_names.tolist(), bc.data[0].tolist(), strict=True))
    script = post_script(tmp, "predict", record)
    env = {"OMP_NUM_THREADS": "1", "BUNDLE": str(bundle)}

    # The servers stay up (an idle one costs nothing) and the points alternate between them, so
    # a neighbour's load on this shared machine hits all alike; each figure is the median run.
    port = free_port()
    ours = start([str(BIN / "flywheel"), "serve", "--port", str(port)], tmp, env)
    procs = {"ours": ours}
    urls = {"ours": f"http://127.0.0.1:{port}/v1/predict"}
    baselines = {"hand": ["hand_app:app"], "hand x2": ["hand_app:app", "--workers", "2"]}
    if args.predictor_baseline:
        baselines["predictor"] = ["naive_app:app"]
    for name, app_args in baselines.items():
        p = free_port()
        procs[name] = start([str(BIN / "uvicorn"), *app_args, "--port", str(p), "--log-level", "warning"], tmp, env)
        urls[name] = f"http://127.0.0.1:{p}/predict"
    runs: dict[str, dict[int, list[dict[str, float]]]] = {name: {} for name in urls}
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/health", proc=ours)
        for name in baselines:
            wait_ready(urls[name].replace("/predict", "/docs"), proc=procs[name])
        for name, url in urls.items():  # the same answer from every server
            answer = httpx.post(url, json=record).json()
            assert str(answer["prediction"]) == str(httpx.post(urls["ours"], json=record).json()["prediction"]), name
        for url in urls.values():  # warm up every server alike (first calls, the first checkpoints)
            wrk(url, script, 1, 2)
            wrk(url, script, 8, 2)
        for c in (1, 8, 64):
            for _ in range(args.repeats):
                for name, url in urls.items():
                    runs[name].setdefault(c, []).append(wrk(url, script, c, args.seconds))
        ids = [httpx.post(urls["ours"], json=record).json()["prediction_id"] for _ in range(200)]
        fb = wrk(f"http://127.0.0.1:{port}", feedback_script(tmp, ids), 64, args.seconds)
        ceiling = wrk(f"http://127.0.0.1:{port}/v1/health", folder_script(tmp), 64, args.seconds)
    finally:
        for proc in procs.values():
            stop(proc)
    results = {name: {c: median_run(r) for c, r in points.items()} for name, points in runs.items()}
    import sqlite3

    with sqlite3.connect(tmp / ".flywheel" / "flywheel.db") as db:
        stored_feedback = db.execute("select count(*) from feedback").fetchone()[0]
        logged = db.execute("select count(*) from predictions").fetchone()[0]
    limit = in_process(bundle)

    table = Table(title="serving: breast-cancer MLP, wrk -t1, 127.0.0.1 (ours: every prediction logged, sync)")
    others = [n for n in results if n != "ours"]
    for col in ("concurrency", "ours req/s", "ours p50 ms", "ours p99 ms",
                *(f"{n} req/s" for n in others), *(f"ours/{n}" for n in others), "errors"):
        table.add_column(col, justify="right")
    for c in (1, 8, 64):
        a = results["ours"][c]
        table.add_row(str(c), f"{a['rps']:,.0f}", f"{a['p50']:.2f}", f"{a['p99']:.2f}",
                      *(f"{results[n][c]['rps']:,.0f}" for n in others),
                      *(f"{a['rps'] / results[n][c]['rps']:.2f}" for n in others),
                      "/".join(f"{results[n][c]['errors']:.0f}" for n in results))
    console = Console(width=140)
    console.print(table)
    console.print(f"in process (the limit): {limit[1]:,.0f} rows/s at batch 1, {limit[1024]:,.0f} rows/s at batch 1024")
    console.print(f"feedback: {fb['rps']:,.0f} acknowledged writes/s at concurrency 64 (p99 {fb['p99']:.1f} ms); "
                  f"{stored_feedback} rows stored vs {fb['requests'] - fb['errors']:.0f} acknowledged by wrk "
                  f"(wrk counts requests cut off at the end as unanswered); {logged} predictions logged")
    console.print(f"HTTP stack ceiling on this machine: GET /v1/health {ceiling['rps']:,.0f} req/s at concurrency 64 "
                  "(same server, no model, no database)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
