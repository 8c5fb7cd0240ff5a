"""Request parsing for the prediction server: JSON bodies, record lists, schema validation,
feedback labels. Each failure is a :class:`BadRequest` (status + JSON detail) or a
:class:`FlywheelError`, which the app turns into a 4xx answer; nothing here touches the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from dataflywheel.errors import LabelError
from dataflywheel.feedback.completion_feedback import FIELDS, ONE_OF, KindError, feedback_kind
from dataflywheel.feedback.labels import check_label
from dataflywheel.serve.schemas import FeedbackIn

__all__ = ["MAX_ERRORS", "BadRequest", "Feedback", "LabelError", "check_label", "logged_output", "parse_feedback",
           "parse_json", "split_records"]

MAX_ERRORS = 20
"""Most validation errors listed in one 422 answer."""


def logged_output(output: dict[str, Any]) -> dict[str, Any]:
    return {"prediction": output["prediction"], "probabilities": output["probabilities"]}


def parse_json(body: bytes) -> Any:
    if not body:
        raise BadRequest(400, "empty request body; send a JSON record or a list of records")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first = exc
    try:  # NaN/Infinity are not JSON, but get a 422 naming the field rather than a parse error
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"malformed JSON: {exc}") from None
    except RecursionError:  # nested deeper than orjson's limit (1024) and Python's stack
        raise BadRequest(400, f"malformed JSON: {first}; arrays and objects nest at most 1024 deep") from None


def split_records(payload: Any, max_records: int) -> list[Any]:
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise BadRequest(422, f"expected a JSON object (one record) or a list of records, got {type(payload).__name__}")
    if not payload:
        raise BadRequest(422, "empty list of records; send at least one record")
    if len(payload) > max_records:
        raise BadRequest(413, f"{len(payload)} records in one request; the limit is {max_records}")
    return payload


def validate_records(model: type[BaseModel], records: list[Any], single: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        prefix: tuple[str | int, ...] = ("body",) if single else ("body", i)
        if not isinstance(record, dict):
            errors.append({"loc": list(prefix), "msg": "a record must be a JSON object", "type": "model_type"})
            continue
        try:
            out.append(model.model_validate(record).model_dump())
        except ValidationError as exc:
            errors.extend({"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors())
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise BadRequest(422, errors[:MAX_ERRORS])
    return out


_FEEDBACK = TypeAdapter(FeedbackIn)
_NOT_LABEL = frozenset(FIELDS) - {"label"}


@dataclass(frozen=True, slots=True)
class Feedback:
    """A parsed feedback request: what the log writer is given."""

    prediction_id: str
    kind: str
    """``label``, or a completion kind (:data:`~dataflywheel.feedback.completion_feedback.KINDS`)."""
    value: Any
    """A plain label (the classifier's hot path: stored as ``{"label": value}``), or the dict
    of the request's feedback fields, which the writer's check turns into the stored value."""
    idempotency_key: str | None


def parse_feedback(body: bytes) -> Feedback:
    """A feedback body validated straight from its JSON bytes (422 listing ``{loc, msg, type}``
    with ``loc`` starting at ``"body"``, as FastAPI would): one id (``prediction_id`` or
    ``completion_id``, the same when both are sent) and exactly one kind of feedback."""
    try:
        fb = _FEEDBACK.validate_json(body)
    except ValidationError as exc:
        errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise BadRequest(422, errors[:MAX_ERRORS]) from None
    pid = fb.prediction_id or fb.completion_id
    if pid is None:
        raise BadRequest(422, [{"loc": ["body", "prediction_id"], "type": "missing",
                                "msg": "Field required: send prediction_id (or completion_id, the same id space)"}])
    if fb.completion_id is not None and fb.completion_id != pid:
        raise BadRequest(422, [{"loc": ["body", "completion_id"], "type": "value_error",
                                "msg": "completion_id and prediction_id name one id space; send one of them"}])
    # a plain label (the classifier's hot path) is handed on as it always was, without a dict of fields
    if fb.label is not None and fb.model_fields_set.isdisjoint(_NOT_LABEL):
        return Feedback(pid, "label", fb.label, fb.idempotency_key)
    fields = {f: v for f in FIELDS if (v := getattr(fb, f)) is not None}
    if fields.keys() == {"label"}:
        return Feedback(pid, "label", fb.label, fb.idempotency_key)
    try:
        kind = feedback_kind(fields)
    except KindError as exc:
        msg = ("Field required: " if exc.missing else "Only one kind per request: ") + ONE_OF
        raise BadRequest(422, [{"loc": ["body", name], "msg": msg, "type": "missing" if exc.missing else "value_error"}
                               for name in exc.names]) from None
    return Feedback(pid, kind, fields, fb.idempotency_key)


class BadRequest(Exception):
    """Answer the request with ``status`` and ``{"detail": detail}``."""

    def __init__(self, status: int, detail: str | list[dict[str, Any]]) -> None:
        self.status = status
        self.detail = detail
