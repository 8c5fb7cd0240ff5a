"""Reliability of a real server process: kill -9 mid-stream, several writer processes, swap under load.

Every server listens on 127.0.0.1 only; every client loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer" / "flywheel.yaml"
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two model versions, champion on v1; the server checks its alias every 0.1 s."""
    from dataflywheel.loop import run
    from dataflywheel.registry import versions
    from dataflywheel.store import Project

    folder = tmp_path_factory.mktemp("rel")
    text = EXAMPLE.read_text().replace("epochs: 50", "epochs: 1") + "serve: {swap_poll_seconds: 0.1}\n"
    (folder / "flywheel.yaml").write_text(text)
    assert run(folder / "flywheel.yaml", progress=False).version == 1
    (folder / "flywheel.yaml").write_text(text.replace("seed: 0", "seed: 1"))
    assert run(folder / "flywheel.yaml", progress=False).version == 2
    proj = Project.open(folder / ".flywheel")
    try:
        if versions.alias_version(proj, "champion") != 1:
            versions.promote(proj, 1, reason="test")
    finally:
        proj.close()
    return folder


@pytest.fixture(scope="module")
def rows(project: Path) -> list[dict[str, Any]]:
    test = pl.read_parquet(next((project / ".flywheel" / "artifacts" / "datasets").iterdir()) / "test.parquet")
    return test.drop("target").to_dicts()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(folder: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``flywheel serve`` on a free 127.0.0.1 port; yields (base url, process); always stopped."""
    port = free_port()
    env = os.environ | {"FLYWHEEL_API_TOKEN": ""}
    proc = subprocess.Popen([FLYWHEEL, "serve", "--config", str(folder / "flywheel.yaml"), "--host", "127.0.0.1",
                             "--port", str(port)], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()[-2000:]
            try:
                if httpx.get(f"{url}/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def db(folder: Path) -> Path:
    return folder / ".flywheel" / "flywheel.db"


def count(folder: Path, sql: str, *args: Any) -> int:
    con = sqlite3.connect(db(folder), timeout=30)
    try:
        return int(con.execute(sql, args).fetchone()[0])
    finally:
        con.close()


def integrity(folder: Path) -> str:
    con = sqlite3.connect(db(folder), timeout=30)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def predict_ids(url: str, records: list[dict[str, Any]]) -> list[str]:
    r = httpx.post(f"{url}/v1/predict", json=records, timeout=30)
    assert r.status_code == 200, r.text
    return [a["prediction_id"] for a in r.json()]


def test_kill_9_loses_no_acknowledged_feedback(project: Path, rows: list[dict[str, Any]]) -> None:
    run_tag = f"kill-{time.time_ns()}"
    acked: list[str] = []
    sent: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(url: str, ids: list[str], worker: int) -> None:
        with httpx.Client(base_url=url, timeout=5) as c:
            for i in range(5000):  # bounded; the kill ends it much sooner
                if stop.is_set():
                    return
                key = f"{run_tag}-{worker}-{i}"
                with lock:
                    sent.append(key)
                try:
                    r = c.post("/v1/feedback", json={"prediction_id": ids[i % len(ids)], "label": "1",
                                                     "idempotency_key": key})
                except httpx.TransportError:
                    return
                if 200 <= r.status_code < 300:
                    with lock:
                        acked.append(key)

    with server(project) as (url, proc):
        ids = predict_ids(url, rows[:50])
        threads = [threading.Thread(target=client, args=(url, ids, w)) for w in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    assert len(acked) >= 200

    assert integrity(project) == "ok"
    stored = count(project, "SELECT count(*) FROM feedback WHERE idempotency_key LIKE ?", f"{run_tag}-%")
    # Every acknowledged row is there; at most the 4 requests in flight at the kill were
    # committed without their answer reaching the client.
    assert len(acked) <= stored <= len(acked) + 4
    con = sqlite3.connect(db(project))
    try:
        keys = {k for (k,) in con.execute("SELECT idempotency_key FROM feedback WHERE idempotency_key LIKE ?",
                                          (f"{run_tag}-%",))}
    finally:
        con.close()
    assert set(acked) <= keys <= set(sent)
    with server(project) as (url, _proc):  # the store opens cleanly and takes writes again
        r = httpx.post(f"{url}/v1/feedback", json={"prediction_id": ids[0], "label": "0"}, timeout=10)
        assert r.status_code == 201
        again = httpx.post(f"{url}/v1/feedback", json={"prediction_id": ids[0], "label": "1",
                                                       "idempotency_key": acked[0]}, timeout=10)
        assert again.status_code == 200  # the key survived the crash: no duplicate


CLIENT = textwrap.dedent("""
    import json, sys, httpx
    url, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    records = json.loads(sys.stdin.read())
    ids, acked = [], 0
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(n):
            batch = records[i % len(records):i % len(records) + 1 + i % 3]
            r = c.post("/v1/predict", json=batch)
            assert r.status_code == 200, r.text
            new = [a["prediction_id"] for a in r.json()]
            ids += new
            for j, pid in enumerate(new):
                body = {"prediction_id": pid, "label": "1", "idempotency_key": f"{tag}-{i}-{j}"}
                for _attempt in range(2):  # a retry with the same key must not duplicate
                    r = c.post("/v1/feedback", json=body)
                    assert r.status_code in (200, 201), r.text
                acked += 1
    print(json.dumps({"ids": ids, "acked": acked}))
""")

DIRECT = textwrap.dedent("""
    import json, sys
    from dataflywheel.feedback.log import LogWriter, PredictionRecord, new_id
    from dataflywheel.store.metadata import MetadataStore
    url, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = MetadataStore(url)
    ids = []
    with LogWriter(store) as w:
        for i in range(n):
            recs = [PredictionRecord(new_id(), None, {"x": i}, {"prediction": "1"}, 0.1) for _ in range(2)]
            ids += w.log_predictions(recs).result(30)
            for j, pid in enumerate(recs):
                w.record_feedback(pid.id, "1", idempotency_key=f"{tag}-{i}-{j}").result(30)
    store.close()
    print(json.dumps({"ids": ids, "acked": len(ids)}))
""")


def test_several_processes_write_at_once_without_loss_or_duplicates(
        project: Path, rows: list[dict[str, Any]]) -> None:
    tag = f"multi-{time.time_ns()}"
    before = count(project, "SELECT count(*) FROM predictions")
    records = json.dumps(rows[:30])
    with server(project) as (url, _proc):
        procs = [subprocess.Popen([sys.executable, "-c", CLIENT, url, f"{tag}-http{k}", "40"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in range(2)]
        procs.append(subprocess.Popen([sys.executable, "-c", DIRECT, f"sqlite:///{db(project)}", f"{tag}-direct",
                                       "40"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        results = []
        for p in procs:
            out, err = p.communicate(records.encode() if p is not procs[-1] else b"", timeout=120)
            assert p.returncode == 0, err.decode()[-2000:]
            results.append(json.loads(out))
    ids = [i for r in results for i in r["ids"]]
    acked = sum(r["acked"] for r in results)
    assert len(ids) == len(set(ids)) == acked > 150
    assert count(project, "SELECT count(*) FROM predictions") - before == len(ids)
    assert count(project, "SELECT count(*) FROM feedback WHERE idempotency_key LIKE ?", f"{tag}-%") == acked
    assert count(project, "SELECT count(DISTINCT prediction_id) FROM feedback WHERE idempotency_key LIKE ?",
                 f"{tag}-%") == acked
    assert integrity(project) == "ok"


def test_swap_under_load_fails_no_request(project: Path, rows: list[dict[str, Any]]) -> None:
    seen: list[list[int]] = [[] for _ in range(4)]
    failures: list[str] = []
    stop = threading.Event()

    def client(url: str, k: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            for i in range(20_000):  # bounded in count and, by `stop`, in time
                if stop.is_set():
                    return
                try:
                    r = c.post("/v1/predict", json=rows[(i + k) % len(rows)])
                except httpx.TransportError as exc:
                    failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    seen[k].append(r.json()["model_version"])

    config = str(project / "flywheel.yaml")
    with server(project) as (url, _proc):
        threads = [threading.Thread(target=client, args=(url, k)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            promote = subprocess.run([FLYWHEEL, "models", "promote", "2", "--config", config, "--reason", "swap test"],
                                     capture_output=True, text=True, timeout=60)
            assert promote.returncode == 0, promote.stderr
            deadline = time.monotonic() + 15
            while not all(s and s[-1] == 2 for s in seen) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(15)
            subprocess.run([FLYWHEEL, "models", "promote", "1", "--config", config], capture_output=True, timeout=60)
    assert failures == []
    for s in seen:
        assert s[0] == 1 and s[-1] == 2
        first_new = s.index(2)
        assert set(s[first_new:]) == {2}  # a client that has seen the new model never goes back
    assert sum(len(s) for s in seen) > 100
