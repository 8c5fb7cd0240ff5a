"""PII redaction: detectors per kind, validation, idempotence, frame/record variants, errors."""

from __future__ import annotations

import random
import re
import sys
import types

import polars as pl
import pytest

from dataflywheel.errors import ConfigError, DataError
from dataflywheel.privacy import Redactor, is_card_number, is_ip_address, luhn_valid

ALL = ("email", "phone", "card", "ip")


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


POSITIVE = [
    ("email", "write to jane.doe@example.com today", "write to [email] today"),
    ("email", "a+tag@sub.mail.example.co.uk.", "[email]."),
    ("email", "<Bob_99@Example.ORG>", "<[email]>"),
    ("phone", "call +44 20 7946 0958 now", "call [phone] now"),
    ("phone", "call (555) 123-4567", "call [phone]"),
    ("phone", "call 555-123-4567.", "call [phone]."),
    ("phone", "call 555.123.4567", "call [phone]"),
    ("phone", "call +1 555 123 4567, thanks", "call [phone], thanks"),
    ("phone", "ring 020 7946 0958", "ring [phone]"),
    ("phone", "mobile 07700 900123", "mobile [phone]"),
    ("phone", "intl +33 (1) 23 45 67 89", "intl [phone]"),
    ("phone", "e164 +14155552671", "e164 [phone]"),
    ("phone", "+44 20 7946 0958 2024-01-02", "[phone] 2024-01-02"),
    ("card", "visa 4111 1111 1111 1111 exp", "visa [card] exp"),
    ("card", "mc 5555-5555-5555-4444", "mc [card]"),
    ("card", "amex 378282246310005", "amex [card]"),
    ("card", "amex 3782 822463 10005", "amex [card]"),
    ("card", "order 1234 4111 1111 1111 1111", "order 1234 [card]"),
    ("ip", "from 192.168.0.1 at", "from [ip] at"),
    ("ip", "host 8.8.8.8.", "host [ip]."),
    ("ip", "v6 2001:db8::ff00:42:8329 x", "v6 [ip] x"),
    ("ip", "v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "v6 [ip]"),
    ("ip", "mapped ::ffff:10.0.0.1", "mapped [ip]"),
    ("ip", "loopback ::1 and fe80::1", "loopback [ip] and [ip]"),
]

NEGATIVE = [
    "the year 2024 and 1999-2001",
    "price $1,234.56 or 12.99 EUR, 3.5%",
    "order id 12345678 and ticket 123456789012",
    "date 2024-01-15 time 12:30:45",
    "card-like but not Luhn: 4111 1111 1111 1112 and 1234567890123",
    "twenty digits 41111111111111111111 is an id",
    "bad ip 999.1.1.1 and 256.0.0.1 and 1.2.3 and 01.02.03.04",
    "version v1.2.3.4 and 1.2.3.4.5",
    "mac 00:1A:2B:3C:4D:5E and c++ std::vector a::b",
    "a lone :: and some at-sign @ twitter @handle",
    "short phone 123-4567 and 12 34 56",
    "not an email: foo@bar and @example.com",
]


@pytest.mark.parametrize(("kind", "text", "expected"), POSITIVE)
def test_each_kind_is_redacted(redactor: Redactor, kind: str, text: str, expected: str) -> None:
    result = redactor.redact(text)
    assert result.text == expected
    assert result.counts[kind] == expected.count(f"[{kind}]")
    assert sum(result.counts.values()) == result.counts[kind]


@pytest.mark.parametrize("text", NEGATIVE)
def test_look_alikes_are_left_alone(redactor: Redactor, text: str) -> None:
    result = redactor.redact(text)
    assert result.text == text
    assert result.counts == dict.fromkeys(ALL, 0)


@pytest.mark.parametrize(
    ("kind", "text"), [(k, t) for k, t, _ in POSITIVE if k != "email"][:6]
)
def test_only_configured_kinds_run(kind: str, text: str) -> None:
    others = [k for k in ALL if k != kind]
    assert Redactor(kinds=others).redact(text).text == text
    assert Redactor(kinds=[kind]).redact(text).counts == {kind: 1}


def _luhn_check_digit(body: str) -> str:
    # Independent formulation: double every second digit counting from the check digit.
    digits = [int(c) for c in body][::-1]
    total = sum(sum(divmod(d * 2, 10)) if i % 2 == 0 else d for i, d in enumerate(digits))
    return str((10 - total % 10) % 10)


def test_luhn_agrees_with_an_independent_check_digit() -> None:
    rng = random.Random(1)
    for _ in range(300):
        body = "".join(rng.choice("0123456789") for _ in range(rng.randint(12, 18)))
        good = body + _luhn_check_digit(body)
        bad = body + str((int(_luhn_check_digit(body)) + rng.randint(1, 9)) % 10)
        assert luhn_valid(good) and is_card_number(good)
        assert not luhn_valid(bad) and not is_card_number(bad)
    assert not luhn_valid("") and not luhn_valid("4111a111")
    assert not is_card_number("4111111111111111" + "1" * 8)  # Luhn-irrelevant: too long


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("0.0.0.0", True),
        ("255.255.255.255", True),
        ("256.1.1.1", False),
        ("999.1.1.1", False),
        ("1.2.3", False),
        ("01.2.3.4", False),
        ("2001:db8::1", True),
        ("::", False),
        ("1::2::3", False),
        ("12:30:45", False),
        ("gggg::1", False),
        ("a::b", False),
    ],
)
def test_ip_validation(text: str, valid: bool) -> None:
    assert is_ip_address(text) is valid


def test_email_with_digits_is_one_email_not_a_phone(redactor: Redactor) -> None:
    emails = ["john.5551234567@example.com", "555-123-4567@example.com", "4111111111111111@x.io"]
    for text in emails:
        result = redactor.redact(f"to {text} ok")
        assert result.text == "to [email] ok"
        assert result.counts == {"email": 1, "card": 0, "ip": 0, "phone": 0}


def test_unicode_text(redactor: Redactor) -> None:
    text = (
        "Контакт: иван@пример.рф, тел. +7 495 123-45-67 — 電話：+81 3-1234-5678 🎉 josé@exämple.es"
    )
    result = redactor.redact(text)
    expected = "Контакт: [email], тел. [phone] — 電話：[phone] 🎉 [email]"
    assert result.text == expected
    assert result.counts == {"email": 2, "card": 0, "ip": 0, "phone": 2}
    assert redactor.redact(b"mail \xc3\xa9t\xc3\xa9@example.com").text == "mail [email]"


def test_redacting_twice_changes_nothing_more(redactor: Redactor) -> None:
    for text in [t for _, t, _ in POSITIVE] + NEGATIVE:
        once = redactor.redact(text).text
        again = redactor.redact(once)
        assert again.text == once
        assert sum(again.counts.values()) == 0


def test_custom_replacement_and_dollar_in_frame() -> None:
    r = Redactor(replacement="<$ {kind} $1>")
    text = "x@example.com 10.0.0.1"
    assert r.redact(text).text == "<$ email $1> <$ ip $1>"
    out, _ = r.redact_frame(pl.DataFrame({"t": [text]}), ["t"])
    assert out["t"].to_list() == ["<$ email $1> <$ ip $1>"]


@pytest.mark.parametrize(
    "replacement", ["{0}", "{name}", "{kind", "555-123-4567", "a@b.example.com"]
)
def test_bad_replacement_is_a_config_error(replacement: str) -> None:
    with pytest.raises(ConfigError) as err:
        Redactor(replacement=replacement)
    assert err.value.where == "replacement" and err.value.fix


@pytest.mark.parametrize("kinds", [["email", "ssn"], "email", []])
def test_bad_kinds_are_a_config_error(kinds: object) -> None:
    with pytest.raises(ConfigError) as err:
        Redactor(kinds=kinds)  # type: ignore[arg-type]
    assert err.value.where == "kinds"


@pytest.mark.parametrize("value", [b"caf\xe9 a@b.com", "bad \udcff surrogate", 42, None, 1.5])
def test_invalid_input_is_a_data_error(redactor: Redactor, value: object) -> None:
    with pytest.raises(DataError) as err:
        redactor.redact(value)  # type: ignore[arg-type]
    assert err.value.where == "text" and err.value.fix


def test_redact_many_sums_counts_and_names_the_bad_item(redactor: Redactor) -> None:
    texts = ["a@example.com", "none here", "10.0.0.1 and b@example.com"]
    out, counts = redactor.redact_many(texts)
    assert out == ["[email]", "none here", "[ip] and [email]"]
    assert counts == {"email": 2, "card": 0, "ip": 1, "phone": 0}
    with pytest.raises(DataError, match=r"texts\[1\]"):
        redactor.redact_many(["ok", b"\xff"])


def test_frame_matches_per_text_redaction(redactor: Redactor) -> None:
    texts = [t for _, t, _ in POSITIVE] + NEGATIVE + [None, "", "plain words only"]
    df = pl.DataFrame({"a": texts, "b": list(reversed(texts)), "n": range(len(texts))})
    out, counts = redactor.redact_frame(df, ["a", "b"])
    expected = [None if t is None else redactor.redact(t).text for t in texts]
    assert out["a"].to_list() == expected
    assert out["b"].to_list() == list(reversed(expected))
    assert out["n"].to_list() == df["n"].to_list()
    assert df["a"].to_list() == texts  # input untouched
    _, total = redactor.redact_many([t for t in texts if t is not None])
    assert counts["a"] == counts["b"] == total


def test_frame_binary_and_null_columns(redactor: Redactor) -> None:
    df = pl.DataFrame(
        {"bin": [b"a@example.com", None], "nul": [None, None]},
        schema={"bin": pl.Binary, "nul": pl.Null},
    )
    out, counts = redactor.redact_frame(df, ["bin", "nul"])
    assert out["bin"].to_list() == ["[email]", None]
    assert counts["nul"] == dict.fromkeys(ALL, 0)
    bad = pl.DataFrame({"bin": [b"ok", b"\xff\xfe"]}, schema={"bin": pl.Binary})
    with pytest.raises(DataError, match="row 2"):
        redactor.redact_frame(bad, ["bin"])


@pytest.mark.parametrize(("column", "message"), [("missing", "no such column"), ("n", "not text")])
def test_frame_column_errors(redactor: Redactor, column: str, message: str) -> None:
    df = pl.DataFrame({"t": ["x"], "n": [1]})
    with pytest.raises(DataError, match=message) as err:
        redactor.redact_frame(df, [column])
    assert column in (err.value.where or "")


def test_record_variant(redactor: Redactor) -> None:
    record = {
        "msg": "call 555-123-4567", "note": b"ip 10.1.2.3", "id": 7, "opt": None, "x": "a@b.io"
    }
    out, counts = redactor.redact_record(record, ["msg", "note", "opt", "absent"])
    assert out == {"msg": "call [phone]", "note": "ip [ip]", "id": 7, "opt": None, "x": "a@b.io"}
    assert counts == {"email": 0, "card": 0, "ip": 1, "phone": 1}
    assert record["msg"] == "call 555-123-4567"
    with pytest.raises(DataError) as err:
        redactor.redact_record(record, ["id"])
    assert err.value.where == "id"


# -- property-style: generated PII never survives --------------------------------------------


def _card(rng: random.Random) -> str:
    body = rng.choice(["4", "51", "37", "6011"])
    body += "".join(rng.choice("0123456789") for _ in range(15 - len(body)))
    digits = body + _luhn_check_digit(body)
    sep = rng.choice(["", " ", "-"])
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


def _phone(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    return rng.choice(
        [
            f"+44 {d(2)} {d(4)} {d(4)}",
            f"+1 {d(3)} {d(3)} {d(4)}",
            f"({d(3)}) {d(3)}-{d(4)}",
            f"{d(3)}-{d(3)}-{d(4)}",
            f"0{d(2)} {d(4)} {d(4)}",
        ]
    )


def _email(rng: random.Random) -> str:
    local = "".join(rng.choice("abcxyz0123456789._+-") for _ in range(rng.randint(1, 12)))
    domain = rng.choice(["example", "mail-1", "ü"]) + "." + rng.choice(["com", "io", "de"])
    return f"{rng.choice('abc')}{local}@{domain}"


FILLER = ["the", "2024", "$12.99", "id", "42", "1999-2001", "é", "東京", "1.5", "ok,", "(x)"]


def test_generated_pii_never_leaks(redactor: Redactor) -> None:
    rng = random.Random(20240615)
    texts, secrets = [], []
    for _ in range(400):
        made = {"email": _email(rng), "phone": _phone(rng), "card": _card(rng)}
        words = rng.choices(FILLER, k=rng.randint(0, 8))
        for value in made.values():
            # Two numbers side by side are ambiguous; prose separates them by a word or mark.
            words.insert(rng.randint(0, len(words)), f"{value} {rng.choice(['or', ';', '/'])}")
        texts.append(" ".join(words))
        secrets.append(made)
    out, counts = redactor.redact_many(texts)
    for text, made in zip(out, secrets, strict=True):
        for kind, value in made.items():
            assert value not in text, (kind, value, text)
            assert f"[{kind}]" in text
    assert min(counts["email"], counts["phone"], counts["card"]) >= len(texts)
    frame, _ = redactor.redact_frame(pl.DataFrame({"t": texts}), ["t"])
    assert frame["t"].to_list() == out


# -- optional person names through presidio ---------------------------------------------------


def test_names_without_presidio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)
    with pytest.raises(ConfigError, match="pip install presidio-analyzer") as err:
        Redactor(kinds=["email", "name"])
    assert err.value.where == "kinds"


def test_names_with_a_presidio_analyzer(monkeypatch: pytest.MonkeyPatch) -> None:
    class Result(types.SimpleNamespace):
        pass

    class AnalyzerEngine:
        def analyze(self, text: str, entities: list[str], language: str) -> list[Result]:
            assert entities == ["PERSON"] and language == "en"
            found = []
            for name, score in [("Alice Smith", 0.9), ("Bob", 0.2)]:
                start = text.find(name)
                if start >= 0:
                    found.append(Result(start=start, end=start + len(name), score=score))
            return found

    fake = types.SimpleNamespace(AnalyzerEngine=AnalyzerEngine)
    monkeypatch.setitem(sys.modules, "presidio_analyzer", fake)
    r = Redactor(kinds=["email", "name"])
    result = r.redact("Alice Smith (alice@example.com) met Bob")
    assert result.text == "[name] ([email]) met Bob"
    assert result.counts == {"email": 1, "name": 1}
    out, counts = r.redact_frame(pl.DataFrame({"t": ["hi Alice Smith", None, "nobody"]}), ["t"])
    assert out["t"].to_list() == ["hi [name]", None, "nobody"]
    assert counts["t"] == {"email": 0, "name": 1}


@pytest.mark.parametrize(("kind", "text", "expected"), POSITIVE)
def test_each_kinds_prefilter_admits_its_matches(kind: str, text: str, expected: str) -> None:
    # Python and polars skip a text whose prefilter finds nothing: a miss would leak PII.
    from dataflywheel.privacy.detectors import DETECTORS

    assert re.search(DETECTORS[kind].prefilter, text)
    assert pl.Series([text]).str.contains(DETECTORS[kind].prefilter).item()
