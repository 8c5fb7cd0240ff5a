"""PII redaction: find and replace emails, phones, card numbers, IPs and (optionally) names.

``Redactor(kinds=..., replacement="[{kind}]")`` redacts a text, a list of texts, columns of a
polars frame or fields of a record, and counts what it replaced per kind.
"""

from dataflywheel.privacy.detectors import (
    DETECTORS,
    KINDS,
    is_card_number,
    is_ip_address,
    luhn_valid,
)
from dataflywheel.privacy.redact import DEFAULT_KINDS, RedactionResult, Redactor

__all__ = [
    "DEFAULT_KINDS",
    "DETECTORS",
    "KINDS",
    "RedactionResult",
    "Redactor",
    "is_card_number",
    "is_ip_address",
    "luhn_valid",
]
