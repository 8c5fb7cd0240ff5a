"""The prediction/feedback log: tables on the shared Base, group commit, idempotency, failure isolation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect

from dataflywheel.errors import DataError, NotFoundError
from dataflywheel.feedback.log import (
    FeedbackRow,
    IdempotencyConflict,
    LogWriter,
    PredictionRecord,
    PredictionRow,
    WriterClosed,
    new_id,
    new_ids,
)
from dataflywheel.store import Project
from dataflywheel.store.metadata import Base, utcnow


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project.open(tmp_path / "store")
    yield p
    p.close()


@pytest.fixture
def writer(project: Project) -> Iterator[LogWriter]:
    with LogWriter(project.metadata) as w:
        yield w


def record(**kw: object) -> PredictionRecord:
    return PredictionRecord(id=kw.get("id") or new_id(), model_version=1, input={"x": 1.0},  # type: ignore[arg-type]
                            output={"prediction": "a", "probabilities": {"a": 0.9, "b": 0.1}}, latency_ms=1.5)


def hold(writer: LogWriter) -> threading.Event:
    """Occupy the writer thread until the returned event is set, so later writes queue up."""
    started, gate = threading.Event(), threading.Event()

    def op(_session: object) -> bool:
        started.set()
        return gate.wait(5)

    writer.submit(op)
    assert started.wait(5)
    return gate


def test_a_batch_of_ids_are_distinct_version_4_uuids() -> None:
    import uuid

    ids = new_ids(1000)
    assert len(set(ids)) == 1000 and new_ids(0) == []
    parsed = [uuid.UUID(hex=i) for i in ids]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 and u.hex == i for u, i in zip(parsed, ids, strict=True))
    assert set(ids).isdisjoint(new_ids(1000))


def test_tables_live_on_the_metadata_base(project: Project) -> None:
    LogWriter(project.metadata)
    assert {"predictions", "feedback"} <= set(Base.metadata.tables)
    names = set(inspect(project.metadata.engine).get_table_names())
    assert {"predictions", "feedback", "model_versions"} <= names
    assert any(c["name"] == "idempotency_key" for c in inspect(project.metadata.engine).get_columns("feedback"))


def test_rows_round_trip_after_the_future_completes(writer: LogWriter) -> None:
    r = record()
    assert writer.log_predictions([r]).result(5) == [r.id]
    row = writer.prediction(r.id)
    assert row is not None and row.model_version == 1 and row.input == {"x": 1.0}
    assert row.output["probabilities"] == {"a": 0.9, "b": 0.1} and row.latency_ms == pytest.approx(1.5)
    assert row.created_at is not None


def test_queued_writes_share_one_transaction(writer: LogWriter) -> None:
    gate = hold(writer)
    futures = [writer.log_predictions([record(), record()]) for _ in range(40)]
    assert not any(f.done() for f in futures)
    gate.set()
    ids = [i for f in futures for i in f.result(5)]
    assert writer.count(PredictionRow) == 80 == len(set(ids))
    assert max(writer.group_sizes) == 40 and writer.commits == 2


def test_concurrent_writers_all_commit_in_fewer_transactions(writer: LogWriter) -> None:
    def one(_i: int) -> list[str]:
        return writer.log_predictions([record()]).result(10)

    with ThreadPoolExecutor(8) as pool:
        ids = [i for out in pool.map(one, range(200)) for i in out]
    assert len(set(ids)) == 200 and writer.count(PredictionRow) == 200
    assert sum(writer.group_sizes) == 200 and writer.commits == len(writer.group_sizes)


def test_a_failing_row_fails_only_its_own_caller(writer: LogWriter) -> None:
    first = record()
    writer.log_predictions([first]).result(5)
    gate = hold(writer)
    good = writer.log_predictions([record()])
    duplicate = writer.log_predictions([record(id=first.id)])  # primary-key clash at commit
    also_good = writer.log_predictions([record()])
    gate.set()
    assert len(good.result(5)) == 1 and len(also_good.result(5)) == 1
    with pytest.raises(Exception, match="UNIQUE|unique|IntegrityError"):
        duplicate.result(5)
    assert writer.count(PredictionRow) == 3


def test_a_string_utf8_cannot_encode_is_logged_with_a_replacement(writer: LogWriter) -> None:
    lone = PredictionRecord(id=new_id(), model_version=1, output={"prediction": "a", "probabilities": None},
                            input={"colour": "red\ud800", "pair": "\ud83d\ude00", "ok": "caf\u00e9"}, latency_ms=1.0)
    [pid] = writer.log_predictions([lone]).result(5)
    row = writer.prediction(pid)
    assert row is not None and row.input == {"colour": "red\ufffd", "pair": "\U0001f600", "ok": "caf\u00e9"}


def test_the_wal_file_shrinks_back_after_a_load_peak(project: Project) -> None:
    """A reader holding an old snapshot during a write peak keeps checkpoints from finishing, so
    the WAL grows; once the peak is over it is cut back under the limit."""
    import sqlite3

    limit = 1 << 20
    db = project.metadata.engine.url.database
    with LogWriter(project.metadata, checkpoint_seconds=0.05, wal_limit_bytes=limit) as w:
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM predictions").fetchall()  # a snapshot from before the peak
        big = {"text": "x" * 100_000}
        futures = [w.log_predictions([PredictionRecord(new_id(), 1, big, {"prediction": "a"}, 1.0)])
                   for _ in range(100)]
        for f in futures:
            f.result(30)
        peak = w.wal_size()
        reader.execute("COMMIT")
        reader.close()
        deadline = time.monotonic() + 10
        while w.wal_size() > limit and time.monotonic() < deadline:
            time.sleep(0.05)
        after = w.wal_size()
        assert w.count(PredictionRow) == 100
    assert peak > 4 * limit and after <= limit, (peak, after)


def test_the_wal_starts_over_under_steady_load_without_truncating(project: Project) -> None:
    """Lone commits one after another never leave SQLite a moment with every frame copied, so the
    WAL would only grow; past ``wal_restart_bytes`` the checkpointer pauses the commits for one
    short checkpoint and the WAL starts over: the file stays bounded, no truncating checkpoint
    (which would stall the writers) is needed, and no write fails."""
    from sqlalchemy import event

    restart = 256 * 1024
    truncates: list[str] = []
    listener = lambda *a: truncates.append(a[2]) if "TRUNCATE" in a[2] else None  # noqa: E731
    event.listen(project.metadata.engine, "before_cursor_execute", listener)
    try:
        with LogWriter(project.metadata, checkpoint_seconds=0.02, wal_limit_bytes=1 << 30,
                       wal_restart_bytes=restart) as w:
            record = {"text": "y" * 2_000}
            deadline = time.monotonic() + 1.5
            sizes, n = [], 0
            while time.monotonic() < deadline:
                done: list[BaseException | None] = []
                rows = [{"id": new_id(), "created_at": utcnow(), "model_version": 1, "input": record,
                         "output": {"prediction": "a"}, "latency_ms": 1.0}]
                w.submit_rows(rows, lambda _v, e, done=done: done.append(e), None, inline=True)
                while not done:
                    time.sleep(0.0005)
                assert done == [None]
                n += 1
                sizes.append(w.wal_size())
            assert w.count(PredictionRow) == n
            restarts = w._checkpointer.restarts if w._checkpointer else 0
    finally:
        event.remove(project.metadata.engine, "before_cursor_execute", listener)
    assert restarts >= 2, restarts
    assert not truncates, truncates
    # Every commit appends at least one page-sized frame: without restarts the file would hold
    # them all; restarting, it reuses its space from the start.
    assert max(sizes) < n * 4096 / 2, (max(sizes), n)


def test_feedback_unknown_prediction_is_not_found(writer: LogWriter) -> None:
    with pytest.raises(NotFoundError, match="no prediction"):
        writer.record_feedback("deadbeef", "a").result(5)
    assert writer.count(FeedbackRow) == 0


def test_feedback_idempotency_key_returns_the_first_id(writer: LogWriter) -> None:
    r = record()
    writer.log_predictions([r]).result(5)
    first = writer.record_feedback(r.id, "a", idempotency_key="k1").result(5)
    again = writer.record_feedback(r.id, "a", idempotency_key="k1").result(5)
    assert first.created and not again.created and again.id == first.id
    other = writer.record_feedback(r.id, "b").result(5)
    assert other.created and other.id != first.id
    rows = writer.feedback_for(r.id)
    assert [f.value for f in rows] == [{"label": "a"}, {"label": "b"}] and rows[0].idempotency_key == "k1"


def test_same_key_twice_in_one_group_is_one_row(writer: LogWriter) -> None:
    r = record()
    writer.log_predictions([r]).result(5)
    gate = hold(writer)
    futures = [writer.record_feedback(r.id, "a", idempotency_key="same") for _ in range(5)]
    gate.set()
    results = [f.result(5) for f in futures]
    assert len({x.id for x in results}) == 1 and sum(x.created for x in results) == 1
    assert writer.count(FeedbackRow) == 1


def test_key_reused_for_another_prediction_conflicts(writer: LogWriter) -> None:
    a, b = record(), record()
    writer.log_predictions([a, b]).result(5)
    writer.record_feedback(a.id, "a", idempotency_key="k").result(5)
    with pytest.raises(IdempotencyConflict):
        writer.record_feedback(b.id, "a", idempotency_key="k").result(5)


def test_key_replayed_with_another_value_conflicts_naming_the_key(writer: LogWriter) -> None:
    r = record()
    writer.log_predictions([r]).result(5)
    first = writer.record_feedback(r.id, "a", idempotency_key="k-7").result(5)
    with pytest.raises(IdempotencyConflict, match=r"idempotency_key 'k-7': .*label 'a'"):
        writer.record_feedback(r.id, "b", idempotency_key="k-7").result(5)
    gate = hold(writer)  # the same within one group: the first value wins, the other conflicts
    same_group = [writer.record_feedback(r.id, v, idempotency_key="k-8") for v in ("b", "a", "b")]
    gate.set()
    assert same_group[0].result(5).created and same_group[2].result(5).id == same_group[0].result(5).id
    with pytest.raises(IdempotencyConflict, match="k-8"):
        same_group[1].result(5)
    # a value equal once checked (normalised) is the same request
    again = writer.record_feedback(r.id, "A", idempotency_key="k-7", check=lambda _p, v: str(v).lower()).result(5)
    assert not again.created and again.id == first.id
    assert [f.value for f in writer.feedback_for(r.id)] == [{"label": "a"}, {"label": "b"}]


def test_check_can_reject_or_normalise_the_value(writer: LogWriter) -> None:
    r = record()
    writer.log_predictions([r]).result(5)

    def check(row: PredictionRow, value: object) -> object:
        if value not in row.output["probabilities"]:
            raise DataError("not a class", where="label")
        return str(value).upper()

    with pytest.raises(DataError, match="not a class"):
        writer.record_feedback(r.id, "zebra", check=check).result(5)
    writer.record_feedback(r.id, "b", check=check).result(5)
    assert [f.value for f in writer.feedback_for(r.id)] == [{"label": "B"}]


def test_close_commits_what_was_queued_then_refuses(project: Project) -> None:
    w = LogWriter(project.metadata).start()
    futures = [w.log_predictions([record()]) for _ in range(20)]
    w.close()
    assert all(f.done() and not f.exception() for f in futures)
    assert w.count(PredictionRow) == 20 and not w.alive
    with pytest.raises(WriterClosed):
        w.log_predictions([record()])


def test_a_group_of_mixed_writes_is_one_transaction_in_queue_order(writer: LogWriter) -> None:
    """Predictions and feedback queued together commit once; feedback sees a prediction queued
    before it in the same group, and every outcome (created, repeat, 404, 409, rejected) is its own."""
    known = record()
    writer.log_predictions([known]).result(5)
    writer.record_feedback(known.id, "a", idempotency_key="old").result(5)
    fresh = record()

    def check(row: PredictionRow, value: object) -> object:
        if value not in row.output["probabilities"]:
            raise DataError("not a class", where="label")
        return value

    commits = writer.commits
    gate = hold(writer)
    logged = writer.log_predictions([fresh])
    outcomes = [
        writer.record_feedback(fresh.id, "b", check=check),  # its prediction is in this very group
        writer.record_feedback(known.id, "a", idempotency_key="old"),  # seen before: the first id
        writer.record_feedback(fresh.id, "a", idempotency_key="old"),  # same key, other prediction
        writer.record_feedback("0" * 32, "a"),
        writer.record_feedback(known.id, "zebra", check=check),
        writer.record_feedback(known.id, "b", idempotency_key="new"),
        writer.record_feedback(known.id, "b", idempotency_key="new"),  # repeated within the group
    ]
    gate.set()
    assert logged.result(5) == [fresh.id]
    assert outcomes[0].result(5).created and not outcomes[1].result(5).created
    with pytest.raises(IdempotencyConflict):
        outcomes[2].result(5)
    with pytest.raises(NotFoundError):
        outcomes[3].result(5)
    with pytest.raises(DataError, match="not a class"):
        outcomes[4].result(5)
    first, again = outcomes[5].result(5), outcomes[6].result(5)
    assert first.created and not again.created and again.id == first.id
    assert writer.commits == commits + 2 and writer.group_sizes[-1] == 8  # the held op's, then ours
    assert writer.count(FeedbackRow) == 3
    assert [f.value for f in writer.feedback_for(fresh.id)] == [{"label": "b"}]


def test_submit_rows_settles_on_the_writer_thread_after_commit(writer: LogWriter) -> None:
    seen: list[tuple[bool, object, bool]] = []
    done = threading.Event()
    row = {"id": new_id(), "created_at": utcnow(), "model_version": 2, "input": {"x": 2.0},
           "output": {"prediction": 1.5, "probabilities": None}, "latency_ms": 0.5}

    def settle(value: object, exc: BaseException | None) -> None:
        seen.append((exc is None, value, writer.prediction(row["id"]) is not None))  # type: ignore[arg-type]
        done.set()

    writer.submit_rows([row], settle, result="token")
    assert done.wait(5)
    assert seen == [(True, "token", True)]
    stored = writer.prediction(row["id"])  # type: ignore[arg-type]
    assert stored is not None and stored.input == {"x": 2.0} and stored.output["probabilities"] is None
