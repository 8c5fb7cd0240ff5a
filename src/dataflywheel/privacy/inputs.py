"""Redaction of a model's inputs: the one step every prediction path runs before the model.

A model bundle records the ``privacy`` settings its training data was redacted with
(``model.json`` ``privacy``); :class:`InputRedaction` applies the same settings to the model's
inputs, so the server, ``flywheel predict``, ``flywheel explain`` and the Python API hand the
model the same text for the same input, and the model sees at prediction what it saw in training.

``columns: text`` redacts the model's text inputs; a list redacts the listed columns the model
reads. Only text is redacted: string (or UTF-8 bytes) values, and integers in a text column
(read from a CSV as numbers), which become their decimal text as the text encoder would make
them; nulls and other values pass unchanged. Records and frames give the same text
(:class:`~dataflywheel.privacy.Redactor`'s contract).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from dataflywheel.config import PrivacyConfig

_STRINGS = (pl.String, pl.Binary, pl.Null)


def bundle_privacy(settings: Mapping[str, Any] | PrivacyConfig | None) -> PrivacyConfig:
    """The :class:`PrivacyConfig` a bundle records (``model.json`` ``privacy``); a bundle that
    records none was trained with the defaults unless its project said otherwise."""
    if isinstance(settings, PrivacyConfig):
        return settings
    return PrivacyConfig.model_validate(dict(settings or {}))


@dataclass(frozen=True)
class InputRedaction:
    """PII redaction of the ``columns`` of a model's inputs; ``redactor`` None redacts nothing."""

    redactor: Any | None = None
    """A :class:`~dataflywheel.privacy.Redactor`, or None when no input is redacted."""
    columns: tuple[str, ...] = ()

    @classmethod
    def for_inputs(cls, privacy: PrivacyConfig | Mapping[str, Any] | None, inputs: Sequence[str],
                   text_inputs: Iterable[str]) -> InputRedaction:
        """The redaction ``privacy`` asks for on a model reading ``inputs`` (``text_inputs`` of
        them text); disabled, or no input to redact, is :class:`InputRedaction` ``()``."""
        settings = bundle_privacy(privacy)
        if not settings.enabled:
            return cls()
        texts = set(text_inputs)
        wanted = [c for c in inputs if c in texts] if settings.columns == "text" else [
            c for c in inputs if c in settings.columns]
        if not wanted:
            return cls()
        from dataflywheel.data.dataset import privacy_redactor

        return cls(privacy_redactor(settings), tuple(wanted))

    def records(self, records: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Copies of ``records`` with PII replaced in :attr:`columns`, and counts per kind."""
        if self.redactor is None:
            return [r if isinstance(r, dict) else dict(r) for r in records], {}
        total: dict[str, int] = {}
        out = []
        for record in records:
            texts = {c: _text_value(record[c]) for c in self.columns if c in record}
            clean, counts = self.redactor.redact_record(
                {**record, **texts}, [c for c, v in texts.items() if isinstance(v, str | bytes)])
            out.append(clean)
            _add(total, counts)
        return out, total

    def frame(self, df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
        """``df`` with PII replaced in the :attr:`columns` it has, and counts per kind."""
        if self.redactor is None:
            return df, {}
        present = [c for c in self.columns if c in df.columns]
        cast = [c for c in present if df[c].dtype.is_integer() or df[c].dtype in (pl.Categorical, pl.Enum)]
        if cast:
            df = df.with_columns(pl.col(cast).cast(pl.String))
        texts = [c for c in present if df[c].dtype in _STRINGS]
        if not texts:
            return df, {}
        df, per_column = self.redactor.redact_frame(df, texts)
        total: dict[str, int] = {}
        for counts in per_column.values():
            _add(total, counts)
        return df, total


def _text_value(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _add(total: dict[str, int], counts: Mapping[str, int]) -> None:
    for kind, n in counts.items():
        if n:
            total[kind] = total.get(kind, 0) + n
