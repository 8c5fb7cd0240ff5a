"""The ``privacy`` section: which text is redacted, and to what."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from dataflywheel.config.section import Section

PiiKind = Literal["email", "phone", "card", "ip", "name"]
"""What :mod:`dataflywheel.privacy` can redact."""
DEFAULT_PII_KINDS: tuple[PiiKind, ...] = ("email", "phone", "card", "ip")


class PrivacyConfig(Section):
    """PII redaction (emails, phones, card numbers, IPs; names with presidio) applied to text at
    ingestion, to prediction inputs before they are predicted on and logged, and so to every
    dataset version retraining builds from them."""

    enabled: bool = True
    columns: list[str] | Literal["text"] = "text"
    """Columns to redact: ``text`` = every text column (declared or inferred, never the target),
    or a list of string columns; a name not in the data is an error at ingestion."""
    kinds: list[PiiKind] = Field(default_factory=lambda: list(DEFAULT_PII_KINDS), min_length=1)
    """What to redact; ``name`` needs presidio-analyzer and a spaCy model."""
    replacement: str = "[{kind}]"
    """What a match becomes; ``{kind}`` is the kind's name."""

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "text":
            raise ValueError(f"must be 'text' (every text column) or a list of column names (got {v!r})")
        return v
