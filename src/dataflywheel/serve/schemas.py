"""Request models generated from a bundle's :class:`~dataflywheel.data.schema.Schema`.

One pydantic model per served model, built with :func:`pydantic.create_model`: every feature the
preprocessor reads is a required field (``null`` is allowed and means "missing", which the
preprocessor fills as at training time). ``number`` fields take finite JSON numbers only (no
strings, booleans, NaN or infinity); ``category``/``binary``/``text``/``datetime`` fields take
strings, with integers and booleans read as their category string (``1`` -> ``"1"``, ``true`` ->
``"true"``), as the encoders compare categories; like text, they must be valid Unicode;
``datetime`` fields take a string that reads as a date or time (``2024-05-01``,
``2024-05-01T13:45:00``, ...: the formats a datetime column is read in), nothing else. ``text``
fields take raw text: a non-empty, non-blank JSON string of valid Unicode (no numbers or unpaired
surrogates; ``null`` reads as empty text beside other inputs); any length passes (the body
limit bounds it) and the tokenizer truncates it to the model's ``max_length``, counted in
``/metrics``. Extra keys are ignored, so
a client may send ids alongside the features; a misspelt feature shows as a missing one.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from dataflywheel.data.schema import Schema

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _as_category(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return value  # str passes; anything else fails str validation with the field's name


def _check_unicode(value: str) -> str:
    """``value`` if it is valid Unicode (JSON's ``\\ud800`` escapes can smuggle in unpaired
    surrogates, which UTF-8 cannot encode, so the record could not be logged)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not valid Unicode (unpaired surrogate at character {exc.start})") from None
    return value


Category = Annotated[str, BeforeValidator(_as_category), Field(strict=True, max_length=10_000),
                     AfterValidator(_check_unicode)]


def _check_text(value: str) -> str:
    if not value.strip():
        raise ValueError("text must not be empty or blank")
    return _check_unicode(value)


Text = Annotated[str, Field(strict=True), AfterValidator(_check_text)]


def _check_datetime(value: str) -> str:
    from dataflywheel.features.datetimes import readable_datetime

    if not readable_datetime(_check_unicode(value)):
        raise ValueError("not a date or time: send e.g. 2024-05-01, 2024-05-01 13:45 or 2024-05-01T13:45:00")
    return value


Datetime = Annotated[str, Field(strict=True, max_length=100), AfterValidator(_check_datetime)]

_TYPES: dict[str, Any] = {"number": Number, "category": Category, "binary": Category,
                          "text": Text, "datetime": Datetime}


class RecordBase(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def record_model(schema: Schema, columns: list[str] | None = None, name: str = "Record") -> type[BaseModel]:
    """A pydantic model of one input record: ``columns`` (default: every feature) typed by ``schema``."""
    wanted = columns if columns is not None else [c.name for c in schema.features]
    fields: dict[str, Any] = {}
    for col in wanted:
        ftype = schema.column(col).type
        # A missing value is scored as missing (a text as empty text), except a text that is
        # the only input: then there is nothing to score (as in Preprocessor.transform).
        only_input = ftype == "text" and len(wanted) == 1
        kind = _TYPES[ftype] if only_input else _TYPES[ftype] | None
        fields[col] = (kind, Field(..., description=f"{ftype} feature"))
    return create_model(name, __base__=RecordBase, **fields)


def served_columns(predictor: Any) -> list[str]:
    """The columns the predictor's preprocessor reads (a subset of the schema's features), text
    columns included (:attr:`Predictor.input_columns`, read from any object shaped like one:
    the monitor is given stand-ins)."""
    columns = getattr(predictor.preprocessor, "input_columns_", None)
    if columns:
        return list(columns)
    encoders = getattr(predictor.preprocessor, "encoders_", None)
    if encoders:
        return list(encoders)
    return [c.name for c in predictor.schema.features]


Id = Annotated[str, Field(min_length=1, max_length=64)]
FreeText = Annotated[str, Field(strict=True, max_length=100_000), AfterValidator(_check_unicode)]
Index = Annotated[int, Field(strict=True)]
Label = Annotated[str, Field(strict=True, max_length=10_000)] | Annotated[int, Field(strict=True)] | Number


class FeedbackIn(BaseModel):
    """POST /v1/feedback: feedback on a logged prediction or completion, one kind per request.

    A classifier's (or regression model's) prediction takes its true ``label``; a completion
    takes ``thumbs``, ``rating``, ``correction``, ``choice`` or ``comment`` (see
    :mod:`dataflywheel.feedback.completion_feedback`: ranges and defaults are checked there,
    against the logged response)."""

    model_config = ConfigDict(extra="forbid")
    prediction_id: Id | None = None
    """The ``prediction_id`` of /v1/predict, or a completion's response ``id``."""
    completion_id: Id | None = None
    """A completion's response ``id`` (the same id space as ``prediction_id``: send either)."""
    label: Label | None = None
    """A class name (an integer is read as its string, ``1`` -> ``"1"``) or, for regression, a number."""
    thumbs: Annotated[str, Field(strict=True, max_length=10)] | None = None
    """``up`` or ``down``."""
    rating: Index | None = None
    """1 to 5."""
    correction: FreeText | None = None
    """The answer as it should have been (the user's edit); PII-redacted before it is stored."""
    choice: Index | None = None
    """The index, in the response's ``choices``, of the preferred one (a response with ``n`` >= 2)."""
    choice_index: Index | None = None
    """Which choice the thumbs, rating, correction or comment is about (default 0 when ``n`` is 1)."""
    comment: FreeText | None = None
    """Free text, alone or beside another kind; PII-redacted before it is stored."""
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
