"""Feedback on generated completions: what each kind stores, its checks, and "latest wins".

One feedback request is one ``feedback`` row (:class:`~dataflywheel.feedback.tables.FeedbackRow`)
whose ``kind`` is ``label`` (classifiers and regression models) or one of the completion kinds,
and whose ``value`` is a JSON object:

==========  ===============================================================================
kind        ``value``
==========  ===============================================================================
thumbs      ``{"thumbs": "up" | "down", "choice_index": int}``
rating      ``{"rating": 1..5, "choice_index": int}``
correction  ``{"correction": str, "choice_index": int}``: the user's edit, PII-redacted
choice      ``{"choice": int}``: the preferred choice of the response (for a multi-prompt
            ``/v1/completions`` response, among those of the same prompt: ``i*n .. i*n+n-1``)
comment     ``{"comment": str, "choice_index": int}``, PII-redacted
==========  ===============================================================================

Any kind may also carry ``"comment"`` (redacted) beside its own field: a thumbs-down with a reason
is one row of kind ``thumbs``. ``choice_index`` (the choice the feedback is about) defaults to 0
when the response has one choice per prompt (``n == 1``) and is required when ``n > 1``; out of
range is an error naming it. ``choice`` on a response with ``n == 1`` is an error (there was no
choice to make). A request names exactly one of the kind fields (``label``, ``thumbs``,
``rating``, ``correction``, ``choice``), or ``comment`` alone.

The checks run inside the log writer (the prediction row is read there), dispatched by the task
of the prediction's model version (:meth:`~dataflywheel.tasks.Task.check_feedback`): the
generation task calls :func:`check_completion_feedback`, the others
:func:`~dataflywheel.feedback.labels.check_answer_feedback`. Errors are
:class:`~dataflywheel.errors.LabelError` s naming the field (a 422 on the server, a row's error in
``flywheel feedback import``).

"Latest wins": :func:`latest_completion_feedback` keeps, of a set of rows, the newest per
(completion, kind, the choice it is about); this is how the rows are meant to be read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from dataflywheel.errors import LabelError

if TYPE_CHECKING:
    from dataflywheel.config import PrivacyConfig
    from dataflywheel.feedback.tables import FeedbackRow
    from dataflywheel.privacy import Redactor

KIND_FIELDS: tuple[str, ...] = ("label", "thumbs", "rating", "correction", "choice")
"""The fields that each make a request's kind; ``comment`` alone is the kind ``comment``."""
COMPLETION_KINDS: tuple[str, ...] = ("thumbs", "rating", "correction", "choice", "comment")
KINDS: tuple[str, ...] = ("label", *COMPLETION_KINDS)
FIELDS: tuple[str, ...] = (*KIND_FIELDS, "choice_index", "comment")
"""Every field a feedback request (or an imported row) may hold beside its ids and key."""
THUMBS = ("up", "down")
RATINGS = range(1, 6)
MAX_TEXT = 100_000
"""Longest correction or comment, in characters."""
ONE_OF = "send exactly one of label, thumbs, rating, correction or choice (or comment alone)"


class KindError(LabelError):
    """A request with none, or more than one, of the kind fields; ``names`` are those at fault
    (every kind field when none was given)."""

    def __init__(self, names: list[str], *, missing: bool) -> None:
        self.names = names
        self.missing = missing
        what = "none of them was given" if missing else f"got {' and '.join(names)}"
        super().__init__(f"{ONE_OF}: {what}", where=", ".join(names) if not missing else "kind",
                         fix="one feedback request is one kind; send two requests for two kinds")


def feedback_kind(fields: Mapping[str, Any]) -> str:
    """The kind of a request holding ``fields`` (its non-null feedback fields), or a
    :class:`KindError`."""
    present = [f for f in KIND_FIELDS if fields.get(f) is not None]
    if len(present) == 1:
        return present[0]
    if not present and fields.get("comment") is not None:
        return "comment"
    if present:
        raise KindError(present, missing=False)
    raise KindError([*KIND_FIELDS, "comment"], missing=True)


# -- the checks ------------------------------------------------------------------------------------

def is_completion(output: Mapping[str, Any] | None) -> bool:
    """Whether a logged answer is a completion response (its ``choices``), whatever logged it."""
    return isinstance((output or {}).get("choices"), list)


def choices_per_prompt(prediction: Any) -> int:
    """``n``: how many choices the completion response has per prompt (its logged request's
    ``n``; 1 when it logged none)."""
    n = (getattr(prediction, "input", None) or {}).get("n")
    return int(n) if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def redact_text(text: Any, field: str, redactor: Redactor | None) -> str:
    """``text`` (a correction or comment) checked, non-empty and not blank, and PII-redacted."""
    if not isinstance(text, str):
        raise LabelError(f"{field} must be text, got {type(text).__name__}", where=field)
    if not text.strip():
        raise LabelError(f"{field} is empty", where=field, fix=f"send the {field} as non-blank text, or leave it out")
    if len(text) > MAX_TEXT:
        raise LabelError(f"{field} has {len(text)} characters, more than {MAX_TEXT}", where=field)
    if redactor is None:
        return text
    from dataflywheel.errors import DataError

    try:
        return redactor.redact(text).text
    except DataError as exc:  # an unpaired surrogate: not storable text
        raise LabelError(exc.message, where=field, fix=exc.fix) from None


def no_label() -> LabelError:
    """The answer to a label sent for a completion."""
    return LabelError("a completion takes no label: use correction (the corrected answer), or thumbs, rating, "
                      "choice or comment", where="label", fix='send {"correction": "..."} instead of a label')


def _index(value: Any, field: str, total: int) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # a whole number as a CSV or Parquet reader may give it
    if not isinstance(value, int) or isinstance(value, bool):
        raise LabelError(f"{field} must be an integer, got {value!r}", where=field)
    if not 0 <= value < total:
        raise LabelError(f"{field} {value} is out of range: the response has {total} choice"
                         f"{'s' if total != 1 else ''} (0..{total - 1})", where=field,
                         fix="send the index of one of the response's choices")
    return value


def check_completion_feedback(kind: str, value: Mapping[str, Any], prediction: Any,
                              redactor: Redactor | None = None) -> dict[str, Any]:
    """The stored value of feedback ``kind`` on a logged completion (module docstring), or a
    :class:`LabelError` naming the field. ``value`` holds the request's feedback fields;
    ``prediction`` the logged row (``output`` with its ``choices``; ``input`` with ``n``)."""
    if kind == "label":
        raise no_label()
    if kind not in COMPLETION_KINDS:
        raise LabelError(f"unknown feedback kind {kind!r}", where="kind", fix=ONE_OF)
    total = len((prediction.output or {}).get("choices") or [])
    n = choices_per_prompt(prediction)
    stored: dict[str, Any] = {}
    if kind == "choice":
        if value.get("choice_index") is not None:
            raise LabelError("choice_index does not go with choice: choice is the index of the preferred one",
                             where="choice_index", fix="send choice alone")
        if n < 2:
            raise LabelError("this response has one choice per prompt (n = 1): there is no choice to prefer",
                             where="choice", fix="ask for n: 2 or more to compare completions; rate this one instead")
        stored["choice"] = _index(value.get("choice"), "choice", total)
    else:
        field = kind
        raw = value.get(field)
        if kind == "thumbs":
            if raw not in THUMBS:
                raise LabelError(f"thumbs must be 'up' or 'down', got {raw!r}", where="thumbs")
            stored["thumbs"] = raw
        elif kind == "rating":
            rating = int(raw) if isinstance(raw, float) and raw.is_integer() else raw
            if not isinstance(rating, int) or isinstance(rating, bool) or rating not in RATINGS:
                raise LabelError(f"rating must be an integer from 1 to 5, got {raw!r}", where="rating")
            stored["rating"] = rating
        elif kind == "correction":
            stored["correction"] = redact_text(raw, "correction", redactor)
        else:  # comment
            stored["comment"] = redact_text(raw, "comment", redactor)
        index = value.get("choice_index")
        if index is None:
            if n > 1:
                raise LabelError(f"this response has {n} choices per prompt: say which one the {kind} is about",
                                 where="choice_index", fix=f"send choice_index (0..{total - 1})")
            index = 0
        stored["choice_index"] = _index(index, "choice_index", total)
    if kind != "comment" and value.get("comment") is not None:
        stored["comment"] = redact_text(value["comment"], "comment", redactor)
    return stored


def text_redactor(privacy: PrivacyConfig | None) -> Redactor | None:
    """The redactor of feedback text (corrections, comments) under ``privacy`` (flywheel.yaml's
    section): None when it is disabled; the default kinds when no settings are known."""
    from dataflywheel.privacy import Redactor

    if privacy is None:
        return Redactor()
    if not privacy.enabled:
        return None
    from dataflywheel.data.dataset import privacy_redactor

    return privacy_redactor(privacy)


def lazy_text_redactor(privacy: PrivacyConfig | None) -> Callable[[], Redactor | None]:
    """:func:`text_redactor` built on first use (a ``name`` kind loads presidio: not at start-up)."""
    return functools.cache(lambda: text_redactor(privacy))


# -- latest wins -------------------------------------------------------------------------------------

def feedback_target(row: Any, n: int | None = None) -> int | None:
    """What a row is about within its completion: its ``choice_index``; for a ``choice`` row, the
    group of choices it chose among (the prompt: ``choice // n``; 0 when ``n`` is unknown, as for
    every chat completion); None for a row about no choice (a classifier's label). ``row`` is
    anything with a ``kind`` and a ``value`` (a :class:`FeedbackRow`)."""
    value = row.value or {}
    if row.kind == "choice":
        choice = value.get("choice")
        return int(choice) // n if n and isinstance(choice, int) else 0
    index = value.get("choice_index")
    return int(index) if isinstance(index, int) else None


def latest_completion_feedback(rows: Iterable[FeedbackRow],
                               n: Mapping[str, int] | None = None) -> list[FeedbackRow]:
    """The newest row per (completion id, kind, the choice it is about: :func:`feedback_target`),
    in the order ``rows`` came; ``created_at`` decides, and between equal times the later row in
    ``rows``. ``n`` (completion id -> choices per prompt, :func:`choices_per_prompt`) splits the
    ``choice`` rows of a multi-prompt ``/v1/completions`` response by prompt; without it a
    response's choice rows are one group (right for chat completions and one-prompt requests)."""
    listed = list(rows)
    best: dict[tuple[str, str, int | None], int] = {}
    for i, row in enumerate(listed):
        key = (row.prediction_id, row.kind, feedback_target(row, (n or {}).get(row.prediction_id)))
        j = best.get(key)
        if j is None or not listed[j].created_at > row.created_at:
            best[key] = i
    keep = sorted(best.values())
    return [listed[i] for i in keep]
