"""Redact PII from text, lists of texts, polars frames and single records.

The contract: every match of an active kind (see :mod:`dataflywheel.privacy.detectors`) is
replaced by ``replacement.format(kind=kind)``; the counts say how many of each kind were
replaced. Redaction is idempotent (redacting the output again changes nothing) and the frame,
record and list variants give the same text as :meth:`Redactor.redact` on each value.
Inputs must be ``str`` or UTF-8 ``bytes``; anything else raises :class:`DataError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import polars as pl

from dataflywheel.errors import ConfigError, DataError
from dataflywheel.privacy.detectors import DETECTORS, KINDS, NAME_KIND, Detector

DEFAULT_KINDS: tuple[str, ...] = ("email", "phone", "card", "ip")
PRESIDIO_INSTALL = "pip install presidio-analyzer && python -m spacy download en_core_web_lg"


class RedactionResult(NamedTuple):
    """Redacted text and how many matches of each active kind were replaced."""

    text: str
    counts: dict[str, int]


class Redactor:
    """Replace emails, phones, card numbers, IPs (and optionally person names) in text.

    ``kinds`` chooses what to redact (any of ``email, phone, card, ip, name``); they always run
    in the fixed order of :data:`~dataflywheel.privacy.detectors.DETECTORS`, ``name`` last.
    ``name`` needs presidio-analyzer, loaded here so a missing install fails at construction.
    ``name_language`` and ``name_min_score`` are passed to presidio's analyzer.
    """

    def __init__(
        self,
        kinds: Iterable[str] = DEFAULT_KINDS,
        replacement: str = "[{kind}]",
        *,
        name_language: str = "en",
        name_min_score: float = 0.5,
    ) -> None:
        wanted = _check_kinds(kinds)
        self.kinds: tuple[str, ...] = tuple(k for k in KINDS if k in wanted)
        self.replacement = replacement
        self.name_language = name_language
        self.name_min_score = name_min_score
        self._detectors: list[Detector] = [DETECTORS[k] for k in self.kinds if k in DETECTORS]
        # Every built-in kind needs a digit, '@' or ':'; most prose has none, so skip it cheaply.
        self._screen = re.compile(r"[\d@:]")
        # Then each kind's prefilter (a simple pattern every match of the kind contains) before its
        # full pattern: news prose has digits but rarely a candidate (BBC articles 0.45 -> 0.13 ms).
        self._prefilters = {d.kind: re.compile(d.prefilter) for d in self._detectors}
        self._rendered = {k: _render(replacement, k) for k in self.kinds}
        self._analyzer = _load_name_analyzer() if NAME_KIND in self.kinds else None
        self._check_replacement_is_inert()

    # -- public API ---------------------------------------------------------------------------

    def redact(self, text: str | bytes) -> RedactionResult:
        """Redact one text; ``bytes`` must be valid UTF-8."""
        counts = self._zero_counts()
        out = self._redact_text(_as_text(text, "text"), self._detectors, counts)
        return RedactionResult(out, counts)

    def redact_many(self, texts: Iterable[str | bytes]) -> tuple[list[str], dict[str, int]]:
        """Redact each text; counts are summed over all of them."""
        counts = self._zero_counts()
        out = [
            self._redact_text(_as_text(t, f"texts[{i}]"), self._detectors, counts)
            for i, t in enumerate(texts)
        ]
        return out, counts

    def redact_frame(
        self, df: pl.DataFrame, columns: Iterable[str]
    ) -> tuple[pl.DataFrame, dict[str, dict[str, int]]]:
        """Redact string (or UTF-8 binary) ``columns`` of ``df``; nulls stay null.

        Kinds that need no validation run as native polars ``str.replace_all``; validated kinds
        (card, ip, phone) and names run in Python only on rows whose text matches a cheap
        prefilter. Returns the new frame and ``{column: {kind: count}}``.
        """
        columns = [columns] if isinstance(columns, str) else list(columns)
        out: dict[str, pl.Series] = {}
        all_counts: dict[str, dict[str, int]] = {}
        for col in columns:
            if col in out:
                continue
            series, counts = self._redact_series(_string_column(df, col))
            out[col] = series.alias(col)
            all_counts[col] = counts
        return df.with_columns(list(out.values())), all_counts

    def redact_record(
        self, record: Mapping[str, Any], columns: Iterable[str]
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """Return a redacted copy of ``record`` and counts summed over ``columns``.

        Columns absent from the record, and ``None`` values, are left as they are (a request may
        omit optional fields); any other non-text value raises :class:`DataError`.
        """
        columns = [columns] if isinstance(columns, str) else list(columns)
        counts = self._zero_counts()
        out = dict(record)
        for col in dict.fromkeys(columns):
            value = out.get(col)
            if value is None:
                continue
            out[col] = self._redact_text(_as_text(value, col), self._detectors, counts)
        return out, counts

    # -- internals ----------------------------------------------------------------------------

    def _zero_counts(self) -> dict[str, int]:
        return dict.fromkeys(self.kinds, 0)

    def _redact_text(self, text: str, detectors: list[Detector], counts: dict[str, int]) -> str:
        if detectors is not self._detectors or self._screen.search(text):
            for det in detectors:
                text = self._apply(det, text, counts)
        if self._analyzer is not None:
            text = self._redact_names(text, counts)
        return text

    def _apply(self, det: Detector, text: str, counts: dict[str, int]) -> str:
        if not self._prefilters[det.kind].search(text):
            return text
        rendered = self._rendered[det.kind]
        if det.locate is None:
            text, n = det.pattern.subn(lambda _m: rendered, text)
            counts[det.kind] += n
            return text
        # Scan by hand: a rejected candidate is retried one character later, and after a hit
        # inside a candidate the rest of it is scanned again, so adjacent numbers hide nothing.
        locate = det.locate
        pieces: list[str] = []
        last = pos = 0
        while (m := det.pattern.search(text, pos)) is not None:
            span = locate(m.group())
            if span is None:
                pos = m.start() + 1
                continue
            start, end = m.start() + span[0], m.start() + span[1]
            pieces += (text[last:start], rendered)
            last = pos = end
            counts[det.kind] += 1
        if not pieces:
            return text
        pieces.append(text[last:])
        return "".join(pieces)

    def _redact_names(self, text: str, counts: dict[str, int]) -> str:
        assert self._analyzer is not None
        results = self._analyzer.analyze(
            text=text, entities=["PERSON"], language=self.name_language
        )
        spans = sorted(
            (r.start, r.end) for r in results if r.score >= self.name_min_score and r.end > r.start
        )
        merged: list[list[int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        rendered = self._rendered[NAME_KIND]
        for start, end in reversed(merged):
            text = text[:start] + rendered + text[end:]
        counts[NAME_KIND] += len(merged)
        return text

    def _redact_series(self, s: pl.Series) -> tuple[pl.Series, dict[str, int]]:
        counts = self._zero_counts()
        python_side: list[Detector] = []
        for det in self._detectors:
            if det.vector_pattern is None:
                python_side.append(det)
                continue
            counts[det.kind] += int(s.str.count_matches(det.vector_pattern).sum() or 0)
            s = s.str.replace_all(det.vector_pattern, self._rendered[det.kind].replace("$", "$$"))
        if not python_side and self._analyzer is None:
            return s, counts
        if self._analyzer is not None:
            mask = s.is_not_null()
        else:
            screen = "|".join(f"(?:{d.prefilter})" for d in python_side)
            mask = s.str.contains(screen).fill_null(False)
        idx = mask.arg_true()
        if idx.len() == 0:
            return s, counts
        fixed = [self._redact_text(t, python_side, counts) for t in s.gather(idx).to_list()]
        s = s.clone()
        s.scatter(idx, pl.Series(fixed, dtype=pl.String))
        return s, counts

    def _check_replacement_is_inert(self) -> None:
        """Refuse a replacement that a detector would match: redaction must be idempotent."""
        for kind, rendered in self._rendered.items():
            for det in self._detectors:
                matches = det.pattern.finditer(rendered)
                if any(det.locate is None or det.locate(m.group()) for m in matches):
                    raise ConfigError(
                        f"replacement {rendered!r} for {kind!r} itself looks like {det.kind!r}",
                        where="replacement",
                        fix="use a placeholder without digits, '@' or ':', e.g. '[{kind}]'",
                    )


def _check_kinds(kinds: Iterable[str]) -> set[str]:
    if isinstance(kinds, str):
        raise ConfigError(
            f"kinds must be a list of kinds, not the string {kinds!r}",
            where="kinds",
            fix=f"write kinds=[{kinds!r}]",
        )
    wanted = set(kinds)
    unknown = sorted(str(k) for k in wanted - set(KINDS))
    if unknown:
        raise ConfigError(
            f"unknown PII kind(s) {', '.join(unknown)}",
            where="kinds",
            fix=f"choose from {', '.join(KINDS)}",
        )
    if not wanted:
        raise ConfigError("no PII kinds to redact", where="kinds", fix=f"choose from {KINDS}")
    return wanted


def _render(replacement: str, kind: str) -> str:
    try:
        return replacement.format(kind=kind)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"replacement {replacement!r} is not a valid template ({exc!s})",
            where="replacement",
            fix="use text with at most the field {kind}, e.g. '[{kind}]' or '<redacted>'",
        ) from None


def _load_name_analyzer() -> Any:
    try:
        from presidio_analyzer import AnalyzerEngine
    except ImportError:
        raise ConfigError(
            "PII kind 'name' needs presidio-analyzer, which is not installed",
            where="kinds",
            fix=f"run `{PRESIDIO_INSTALL}` or drop 'name' from kinds",
        ) from None
    try:
        return AnalyzerEngine()
    except (OSError, ImportError) as exc:
        raise ConfigError(
            f"presidio-analyzer could not start ({exc})",
            where="kinds",
            fix=f"run `{PRESIDIO_INSTALL}` or drop 'name' from kinds",
        ) from None


def _as_text(value: object, where: str) -> str:
    """Return ``value`` as valid Unicode text or raise :class:`DataError` naming ``where``."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise DataError(
                    f"text has an unpaired surrogate at character {exc.start} (invalid UTF-8)",
                    where=where,
                    fix="decode the source with encoding='utf-8' and errors='strict'",
                ) from None
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"bytes are not valid UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})",
                where=where,
                fix="re-encode the data as UTF-8",
            ) from None
    raise DataError(
        f"expected text, got {type(value).__name__}",
        where=where,
        fix="pass str (or UTF-8 bytes); cast numbers to text first if they may hold PII",
    )


def _string_column(df: pl.DataFrame, col: str) -> pl.Series:
    if col not in df.columns:
        raise DataError(
            "no such column to redact",
            where=f"column {col!r}",
            fix=f"choose from {', '.join(df.columns)}",
        )
    s = df[col]
    if s.dtype in (pl.String, pl.Null):
        return s.cast(pl.String)
    if s.dtype == pl.Binary:
        for i, value in enumerate(s.to_list()):
            if value is not None:
                _as_text(value, f"column {col!r}, row {i + 1}")
        return s.cast(pl.String)
    raise DataError(
        f"column has type {s.dtype}, not text",
        where=f"column {col!r}",
        fix="cast it to a string column before redacting, or leave it out of the columns",
    )
