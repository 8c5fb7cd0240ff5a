"""Feedback on completions: ``POST /v1/feedback`` on the generation server (thumbs, rating,
correction, choice, comment against a completion's response id), stored as the contract in
``dataflywheel.feedback.completion_feedback`` says, PII-redacted, idempotent, behind the write
token; "latest wins"; ``flywheel feedback import`` of the same kinds; and the classifier's
side of the one check hook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from server_helpers import serving
from sqlalchemy import select

from dataflywheel.errors import DataError, LabelError, NotFoundError
from dataflywheel.feedback.completion_feedback import latest_completion_feedback
from dataflywheel.feedback.importer import import_feedback
from dataflywheel.feedback.labels import FeedbackChecker
from dataflywheel.feedback.log import FeedbackRow, LogWriter, PredictionRecord, new_id
from dataflywheel.serve.auth import AccessMatrix, BearerAuth
from dataflywheel.serve.llm.app import create_generation_app
from dataflywheel.serve.llm.engine import CacheSettings
from dataflywheel.serve.llm.generator import load_generator
from dataflywheel.serve.requests import BadRequest, parse_feedback
from dataflywheel.store import Project

from llm_helpers import save_tiny_llama

openai = pytest.importorskip("openai")

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
EMAIL, PHONE = "jane.doe@example.com", "+1 415 555 0132"
MESSAGES: list[Any] = [{"role": "user", "content": "the cat sat on"}]


class Served:
    def __init__(self, url: str, writer: LogWriter, project: Project, root: Path) -> None:
        self.url = url
        self.writer = writer
        self.project = project
        self.root = root
        self.client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)

    def chat(self, n: int = 1) -> Any:
        return self.client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=4,
                                                   temperature=1.0 if n > 1 else 0, n=n)

    def feedback(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(self.url + "/v1/feedback", json=body, headers=AUTH if headers is None else headers,
                          timeout=30)

    def rows(self, completion_id: str) -> list[FeedbackRow]:
        return self.writer.feedback_for(completion_id)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("feedback")
    gen = load_generator(save_tiny_llama(root / "tiny-chat"), name="tiny-chat", version=1, max_tokens=16,
                         default_max_tokens=4)  # no redactor of its own: feedback falls back to the default kinds
    project = Project.open(root / ".flywheel")
    writer = LogWriter(project.metadata)
    app = create_generation_app(gen, writer, cache=CacheSettings(cache_tokens=1024, page_tokens=16,
                                                                  max_batch_tokens=64),
                                access=AccessMatrix(BearerAuth(TOKEN)))
    with serving(app) as url:
        yield Served(url, writer, project, root)
    project.close()


def test_every_kind_is_stored_as_the_contract_says(served: Served) -> None:
    r = served.chat()
    cid = r.id
    sent = [({"completion_id": cid, "thumbs": "up"}, "thumbs", {"thumbs": "up", "choice_index": 0}),
            ({"prediction_id": cid, "rating": 4}, "rating", {"rating": 4, "choice_index": 0}),
            ({"completion_id": cid, "prediction_id": cid, "correction": "on the mat."}, "correction",
             {"correction": "on the mat.", "choice_index": 0}),
            ({"completion_id": cid, "comment": "too short"}, "comment", {"comment": "too short", "choice_index": 0}),
            ({"completion_id": cid, "thumbs": "down", "comment": "wrong animal", "choice_index": 0}, "thumbs",
             {"thumbs": "down", "choice_index": 0, "comment": "wrong animal"})]
    for body, kind, _ in sent:
        answer = served.feedback(body)
        assert answer.status_code == 201, answer.text
        got = answer.json()
        assert got["prediction_id"] == got["completion_id"] == cid and got["kind"] == kind and got["created"] is True
        assert len(got["feedback_id"]) == 32
    rows = served.rows(cid)
    assert [(row.kind, row.value) for row in rows] == [(kind, value) for _, kind, value in sent]
    assert all(a.created_at < b.created_at for a, b in zip(rows, rows[1:], strict=False))


def test_a_choice_between_the_choices_of_an_n2_response(served: Served) -> None:
    r = served.chat(n=2)
    assert len(r.choices) == 2
    ok = served.feedback({"completion_id": r.id, "choice": 1, "comment": "the second reads better"})
    assert ok.status_code == 201 and ok.json()["kind"] == "choice"
    rated = served.feedback({"completion_id": r.id, "rating": 2, "choice_index": 1})
    assert rated.status_code == 201
    bad = {"choice 2": {"choice": 2}, "choice -1": {"choice": -1},
           "rating without choice_index": {"rating": 3},
           "choice_index 2": {"thumbs": "up", "choice_index": 2},
           "choice with choice_index": {"choice": 0, "choice_index": 1}}
    answers = {name: served.feedback({"completion_id": r.id, **body}) for name, body in bad.items()}
    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(bad, 422)
    assert answers["choice 2"].json()["where"] == "choice" and "out of range" in answers["choice 2"].json()["detail"]
    assert answers["rating without choice_index"].json()["where"] == "choice_index"
    assert answers["choice_index 2"].json()["where"] == "choice_index"
    assert [(row.kind, row.value) for row in served.rows(r.id)] == [
        ("choice", {"choice": 1, "comment": "the second reads better"}), ("rating", {"rating": 2, "choice_index": 1})]
    single = served.chat()
    no_choice = served.feedback({"completion_id": single.id, "choice": 0})
    assert no_choice.status_code == 422 and no_choice.json()["where"] == "choice"
    assert "n = 1" in no_choice.json()["detail"]


def test_a_multi_prompt_completion_response_and_latest_wins_per_prompt(served: Served) -> None:
    r = served.client.completions.create(model="tiny-chat", prompt=["the cat", "the dog"], n=2, max_tokens=3)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]  # prompt i's choices are i*n .. i*n+n-1
    for choice in (0, 3, 1):  # prompt 0: 0 then 1 (1 wins); prompt 1: 3
        assert served.feedback({"completion_id": r.id, "choice": choice}).status_code == 201
    assert served.feedback({"completion_id": r.id, "choice": 4}).status_code == 422
    rows = served.rows(r.id)
    latest = latest_completion_feedback(rows, n={r.id: 2})
    assert [row.value["choice"] for row in latest] == [3, 1]
    assert [row.value["choice"] for row in latest_completion_feedback(rows)] == [1]  # n unknown: one group


def test_bad_feedback_is_a_422_naming_the_field_and_an_unknown_id_a_404(served: Served) -> None:
    cid = served.chat().id
    cases: dict[str, dict[str, Any]] = {
        "rating 0": {"rating": 0}, "rating 6": {"rating": 6}, "rating '5'": {"rating": "5"},
        "rating true": {"rating": True}, "thumbs sideways": {"thumbs": "sideways"},
        "empty correction": {"correction": ""}, "blank correction": {"correction": " \n\t"},
        "blank comment": {"comment": "  "}, "no kind": {}, "two kinds": {"thumbs": "up", "rating": 5},
        "label": {"label": "good"}, "choice_index -1": {"rating": 5, "choice_index": -1},
        "unknown field": {"stars": 5},
    }
    answers = {name: served.feedback({"completion_id": cid, **body}) for name, body in cases.items()}
    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(cases, 422)

    def named(name: str) -> str:
        detail = answers[name].json()
        if isinstance(detail["detail"], list):
            return ",".join(e["loc"][-1] for e in detail["detail"])
        return str(detail["where"])

    assert named("rating 0") == named("rating 6") == named("rating '5'") == named("rating true") == "rating"
    assert named("thumbs sideways") == "thumbs"
    assert named("empty correction") == named("blank correction") == "correction"
    assert named("blank comment") == "comment"
    assert named("no kind") == "label,thumbs,rating,correction,choice,comment"
    assert named("two kinds") == "thumbs,rating"
    assert named("label") == "label" and "use correction" in answers["label"].json()["detail"]
    assert named("choice_index -1") == "choice_index"
    assert named("unknown field") == "stars"
    assert served.rows(cid) == []
    unknown = served.feedback({"completion_id": "f" * 32, "rating": 5})
    assert unknown.status_code == 404 and "no prediction" in unknown.json()["detail"]
    ids = {"no id": {"rating": 5}, "two ids": {"completion_id": cid, "prediction_id": "f" * 32, "rating": 5}}
    answers = {name: served.feedback(body) for name, body in ids.items()}
    assert answers["no id"].status_code == 422 and answers["no id"].json()["detail"][0]["loc"] == [
        "body", "prediction_id"]
    assert answers["two ids"].status_code == 422 and answers["two ids"].json()["detail"][0]["loc"] == [
        "body", "completion_id"]


def test_pii_in_a_correction_and_a_comment_is_redacted_before_it_is_stored(served: Served) -> None:
    cid = served.chat().id
    text = f"write to {EMAIL} or call {PHONE}"
    assert served.feedback({"completion_id": cid, "correction": text, "comment": f"I am {EMAIL}"}).status_code == 201
    assert served.feedback({"completion_id": cid, "comment": f"call {PHONE}"}).status_code == 201
    values = [row.value for row in served.rows(cid)]
    assert values == [{"correction": "write to [email] or call [phone]", "choice_index": 0, "comment": "I am [email]"},
                      {"comment": "call [phone]", "choice_index": 0}]
    with served.project.metadata.transaction() as s:
        stored = json.dumps([f.value for f in s.scalars(select(FeedbackRow))])
    assert EMAIL not in stored and "555" not in stored


def test_idempotency_keys_and_the_write_token(served: Served) -> None:
    r = served.client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=4, stream=True)
    cid = next(iter(r)).id
    for _ in r:  # the row is committed before the stream's [DONE]
        pass
    first = served.feedback({"completion_id": cid, "rating": 5, "idempotency_key": "fb-1"})
    again = served.feedback({"completion_id": cid, "rating": 5, "idempotency_key": "fb-1"})
    other = served.feedback({"completion_id": cid, "rating": 1, "idempotency_key": "fb-1"})
    other_kind = served.feedback({"completion_id": cid, "thumbs": "up", "idempotency_key": "fb-1"})
    assert (first.status_code, again.status_code, other.status_code, other_kind.status_code) == (201, 200, 409, 409)
    assert again.json()["feedback_id"] == first.json()["feedback_id"] and again.json()["created"] is False
    assert other.json()["where"] == "idempotency_key 'fb-1'" and "rating 5" in other.json()["detail"]
    body = {"completion_id": cid, "thumbs": "up"}
    assert served.feedback(body, headers={}).status_code == 401
    assert served.feedback(body, headers={"authorization": "Bearer nope"}).status_code == 403
    assert len(served.rows(cid)) == 1
    docs = httpx.get(served.url + "/openapi.json", headers=AUTH).json()
    assert "completion_id" in json.dumps(docs["paths"]["/v1/feedback"]["post"]["requestBody"])


def test_import_a_jsonl_file_of_completion_feedback(served: Served, tmp_path: Path) -> None:
    one, two = served.chat(), served.chat(n=2)
    bad = [{"completion_id": one.id, "thumbs": "up"},
           {"prediction_id": two.id, "choice": 1},
           {"completion_id": one.id, "rating": 7},
           {"completion_id": two.id, "correction": "x"}]
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in bad))
    with pytest.raises(DataError, match=r"feedback.jsonl row 3: rating must be an integer from 1 to 5, got 7"):
        import_feedback(served.project, path)
    assert served.rows(one.id) == served.rows(two.id) == []  # nothing from a file with a bad row
    for row, message in ((4, r"row 1: .*choice_index"), (1, r"row 1: .*use correction")):
        lone = tmp_path / f"lone{row}.jsonl"
        body = bad[3] if row == 4 else {"completion_id": one.id, "label": "good"}
        lone.write_text(json.dumps(body) + "\n")
        with pytest.raises(DataError, match=message):
            import_feedback(served.project, lone)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"completion_id": "f" * 32, "thumbs": "up"}) + "\n")
    with pytest.raises(NotFoundError, match="unknown.jsonl row 1: no prediction"):
        import_feedback(served.project, unknown)
    good = [*bad[:2], {"completion_id": one.id, "rating": 2, "comment": f"mail {EMAIL}"},
            {"completion_id": two.id, "correction": f"call {PHONE}", "choice_index": 1},
            {"completion_id": one.id, "rating": 3}]
    path.write_text("".join(json.dumps(row) + "\n" for row in good))
    result = import_feedback(served.project, path)
    assert (result.rows, result.created, result.already, result.matched_by) == (5, 5, 0, "prediction_id")
    assert [(r.kind, r.value) for r in served.rows(one.id)] == [
        ("thumbs", {"thumbs": "up", "choice_index": 0}),
        ("rating", {"rating": 2, "choice_index": 0, "comment": "mail [email]"}),
        ("rating", {"rating": 3, "choice_index": 0})]
    assert [(r.kind, r.value) for r in served.rows(two.id)] == [
        ("choice", {"choice": 1}), ("correction", {"correction": "call [phone]", "choice_index": 1})]
    latest = latest_completion_feedback(served.rows(one.id))  # the file's later rating wins
    assert [(r.kind, r.value.get("rating")) for r in latest] == [("thumbs", None), ("rating", 3)]
    again = import_feedback(served.project, path)
    assert (again.created, again.already) == (0, 5)


# -- without a server ---------------------------------------------------------------------------

def _row(pid: str, kind: str, value: dict[str, Any], seconds: int) -> FeedbackRow:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return FeedbackRow(id=new_id(), prediction_id=pid, created_at=at, kind=kind, value=value)


def test_latest_completion_feedback_keeps_the_newest_per_completion_kind_and_choice() -> None:
    rows = [_row("a", "thumbs", {"thumbs": "up", "choice_index": 0}, 5),
            _row("a", "thumbs", {"thumbs": "down", "choice_index": 0}, 3),  # older, though later in the list
            _row("a", "thumbs", {"thumbs": "down", "choice_index": 1}, 1),  # another choice
            _row("a", "rating", {"rating": 2, "choice_index": 0}, 1),
            _row("a", "rating", {"rating": 4, "choice_index": 0}, 1),  # the same time: the later row wins
            _row("b", "thumbs", {"thumbs": "up", "choice_index": 0}, 0),  # another completion
            _row("a", "choice", {"choice": 0}, 2),
            _row("a", "choice", {"choice": 1}, 4),  # a changed preference replaces the first
            _row("a", "label", {"label": "x"}, 0)]
    latest = latest_completion_feedback(rows)
    assert [(r.prediction_id, r.kind, r.value) for r in latest] == [
        ("a", "thumbs", {"thumbs": "up", "choice_index": 0}), ("a", "thumbs", {"thumbs": "down", "choice_index": 1}),
        ("a", "rating", {"rating": 4, "choice_index": 0}), ("b", "thumbs", {"thumbs": "up", "choice_index": 0}),
        ("a", "choice", {"choice": 1}), ("a", "label", {"label": "x"})]
    grouped = latest_completion_feedback([_row("c", "choice", {"choice": 1}, 0), _row("c", "choice", {"choice": 2}, 1)],
                                         n={"c": 2})  # choice 1 is prompt 0's, choice 2 prompt 1's: both kept
    assert [r.value["choice"] for r in grouped] == [1, 2]
    assert latest_completion_feedback([]) == []


def test_a_classifier_prediction_takes_a_label_and_a_comment_but_no_completion_kind(tmp_path: Path) -> None:
    project = Project.open(tmp_path / ".flywheel")
    output = {"prediction": "1", "probabilities": {"0": 0.2, "1": 0.8}}
    completion = {"choices": [{"index": 0, "text": "hi", "finish_reason": "stop", "completion_tokens": 1}]}
    try:
        with LogWriter(project.metadata) as w:
            pid, cid = new_id(), new_id()
            w.log_predictions([PredictionRecord(pid, None, {"x": 1.0}, output, 1.0),
                               PredictionRecord(cid, None, {"prompt": "hello", "n": 1}, completion, 1.0)]).result(10)
            check = FeedbackChecker(project.metadata, redactor=lambda: None)

            def send(body: dict[str, Any], *, redacted: bool = False) -> Any:
                fb = parse_feedback(json.dumps(body).encode())
                checker = FeedbackChecker(project.metadata) if redacted else check
                return w.record_feedback(fb.prediction_id, fb.value, kind=fb.kind, check=checker).result(10)

            send({"prediction_id": pid, "label": "0"})
            send({"prediction_id": pid, "label": 1, "comment": f"see {EMAIL}"}, redacted=True)
            send({"prediction_id": pid, "comment": "odd case"})
            for body, where in (({"prediction_id": pid, "thumbs": "up"}, "thumbs"),
                                ({"prediction_id": pid, "rating": 5}, "rating"),
                                ({"prediction_id": pid, "label": "0", "choice_index": 0}, "choice_index"),
                                ({"prediction_id": pid, "label": "7"}, "label"),
                                ({"completion_id": cid, "label": "1"}, "label")):
                with pytest.raises(LabelError) as exc:
                    send(body)
                assert exc.value.where == where, body
            assert "use correction" in str(exc.value)
            assert send({"completion_id": cid, "thumbs": "down"}).created  # shape: a completion, unversioned
            assert [(f.kind, f.value) for f in w.feedback_for(pid)] == [
                ("label", {"label": "0"}), ("label", {"label": "1", "comment": "see [email]"}),
                ("comment", {"comment": "odd case"})]
    finally:
        project.close()


def test_the_parser_names_the_fields_and_keeps_a_plain_label_plain() -> None:
    fb = parse_feedback(b'{"prediction_id": "p", "label": 1, "idempotency_key": "k"}')
    assert (fb.prediction_id, fb.kind, fb.value, fb.idempotency_key) == ("p", "label", 1, "k")
    fb = parse_feedback(b'{"completion_id": "c", "thumbs": "down", "comment": "no"}')
    assert (fb.prediction_id, fb.kind, fb.value) == ("c", "thumbs", {"thumbs": "down", "comment": "no"})
    with pytest.raises(BadRequest) as exc:
        parse_feedback(b'{"completion_id": "c", "correction": "a", "choice": 1}')
    assert [e["loc"] for e in exc.value.detail] == [["body", "correction"], ["body", "choice"]]  # type: ignore[index]
    with pytest.raises(BadRequest):
        parse_feedback(b'{"completion_id": "c", "comment": "\\ud800"}')  # not storable text


def test_unversioned_answers_are_read_by_their_shape() -> None:
    from dataflywheel.feedback.labels import answer_task

    assert answer_task({"choices": []}).name == "generation"
    assert answer_task({"prediction": "a", "probabilities": {"a": 1.0}}).has_classes
    assert answer_task({"prediction": 2.0, "probabilities": None}).name == "regression"
    row = SimpleNamespace(model_version=None, input={"n": 2}, output={"choices": [{}, {}]})
    assert FeedbackChecker()(row, {"choice": 1}) == {"choice": 1}  # type: ignore[arg-type]
