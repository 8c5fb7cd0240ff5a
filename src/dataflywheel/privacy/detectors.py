"""What counts as PII: one :class:`Detector` per kind (email, phone, card, ip).

A detector is a *candidate* regex (Python :mod:`re`) plus an optional ``locate`` run on each
candidate to find the part that really is PII: a card must pass the Luhn check and have 13-19
digits, an IP must parse with :mod:`ipaddress`, a phone must have a plausible digit count.
Detectors also carry what the vectorised frame path needs: ``vector_pattern`` (a Rust-regex
equivalent of ``pattern`` when the kind needs no ``locate``, so polars can replace it natively)
and ``prefilter`` (a Rust regex matching every text the detector could match, so Python only
sees candidate rows).

Order matters and is fixed by :data:`DETECTORS`: email first (an email may contain digits that
would otherwise read as a phone), then card, ip, phone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Detector:
    """One kind of PII: how to find candidates, how to confirm them, how to pre-screen rows.

    ``locate(candidate)`` returns the span of the candidate that is PII, or None if none is;
    None for ``locate`` means every candidate is PII.
    """

    kind: str
    pattern: re.Pattern[str]
    locate: Callable[[str], tuple[int, int] | None] | None
    prefilter: str
    vector_pattern: str | None = None


def luhn_valid(digits: str) -> bool:
    """Return whether ``digits`` (only 0-9) passes the Luhn checksum."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_card_number(candidate: str) -> bool:
    """A card number: 13-19 digits (spaces/dashes ignored) that pass the Luhn check."""
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _digit_groups(candidate: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\d+", candidate)]


def locate_card(candidate: str) -> tuple[int, int] | None:
    """The run of whole digit groups in ``candidate`` that is a card, or None.

    A candidate like ``1234 4111 1111 1111 1111`` (a number next to a card) fails as a whole but
    holds a card, which must not leak. Preference: 16 digits, then 15, then longest, leftmost.
    """
    groups = _digit_groups(candidate)
    windows = []
    for i in range(len(groups)):
        for j in range(i, len(groups)):
            start, end = groups[i][0], groups[j][1]
            n = sum(b - a for a, b in groups[i : j + 1])
            windows.append((n != 16, n != 15, i - j, i, start, end))
    for *_, start, end in sorted(windows):
        if is_card_number(candidate[start:end]):
            return start, end
    return None


def locate_phone(candidate: str) -> tuple[int, int] | None:
    """The longest prefix of ``candidate``, in whole digit groups, that is a phone number.

    ``+44 20 7946 0958 2024`` is a phone followed by a year, not a 16-digit non-phone.
    """
    for _, end in reversed(_digit_groups(candidate)):
        if is_phone_number(candidate[:end]):
            return 0, end
    return None


def _whole(check: Callable[[str], bool]) -> Callable[[str], tuple[int, int] | None]:
    return lambda candidate: (0, len(candidate)) if check(candidate) else None


def is_ip_address(candidate: str) -> bool:
    """A valid IPv4 (no octet above 255, no leading zeros) or IPv6 address.

    An IPv6 address must hold a decimal digit: ``::``, ``a::b`` or ``dead::beef`` in prose are
    far more often code or words than addresses.
    """
    if ":" in candidate and not any(c.isdigit() for c in candidate):
        return False
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def is_phone_number(candidate: str) -> bool:
    """Plausible digit count: 8-15 with a ``+`` country code (E.164), else 10-11 digits."""
    n = sum(c.isdigit() for c in candidate)
    if candidate.startswith("+"):
        return 8 <= n <= 15
    return 10 <= n <= 11


# Local part and domain use \w so non-ASCII addresses are caught too; no look-arounds, so the
# same pattern runs unchanged in polars (Rust regex) and in Python's re.
EMAIL = r"[\w.%+-]+@(?:[\w-]+\.)+[^\W\d_]{2,}"

CARD = (
    r"(?<![A-Za-z0-9_.,-])"
    r"(?:\d{13,19}"  # contiguous
    r"|\d{4}(?P<s>[ -])(?:\d{4}(?P=s)\d{4}(?P=s)\d{4}(?:(?P=s)\d{3})?"  # 4-4-4-4(-3)
    r"|\d{6}(?P=s)\d{4,5}))"  # 4-6-5 (Amex), 4-6-4 (Diners)
    r"(?![A-Za-z0-9_]|[.,-]\d)"
)

_IPV6 = r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})"
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
IP = rf"(?<![A-Za-z0-9_:.])(?:{_IPV6}(?![A-Za-z0-9_:])|{_IPV4}(?![A-Za-z0-9_]|\.\d))"

PHONE = (
    r"(?<![A-Za-z0-9_+.,-])"
    r"(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){2,5}"  # +44 20 7946 0958, +1 555 123 4567
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}(?P<sep>[ .-])\d{3}(?P=sep)\d{4}"  # 555-123-4567, 555.123.4567
    r"|0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}"  # 020 7946 0958, 07700 900123
    r")"
    r"(?![A-Za-z0-9_]|[.,-]\d)"
)

DETECTORS: dict[str, Detector] = {
    "email": Detector("email", re.compile(EMAIL), None, prefilter="@", vector_pattern=EMAIL),
    "card": Detector("card", re.compile(CARD), locate_card, prefilter=r"\d{4}[ -]?\d{4}"),
    "ip": Detector(
        "ip", re.compile(IP), _whole(is_ip_address), prefilter=r"\d\.\d{1,3}\.\d|:[0-9A-Fa-f]*:"
    ),
    "phone": Detector(
        "phone", re.compile(PHONE), locate_phone, prefilter=r"\+\d|\d[ .)-] ?\d{3}"
    ),
}
"""Built-in detectors in the order they run."""

NAME_KIND = "name"
"""Person names, found by presidio-analyzer (optional dependency), run after the regex kinds."""

KINDS: tuple[str, ...] = (*DETECTORS, NAME_KIND)
