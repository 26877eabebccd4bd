"""Pure readers of untrusted values: bounded JSON, durations, serials as people paste them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from issuer.durations import parse_duration
from issuer.errors import ClientError
from issuer.http.body import MAX_DEPTH, parse_json
from issuer.service.issuance.model import normalise_serial


def test_json_within_bounds_parses() -> None:
    nested = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)  # inside the object: MAX_DEPTH in all
    assert parse_json(b'{"a": 1, "b": [1.5, "x"], "n": ' + nested.encode() + b"}")["a"] == 1
    # Brackets inside strings are not nesting.
    assert parse_json(('{"s": "' + "[" * 500 + '"}').encode()) == {"s": "[" * 500}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
        (b'{"a": ' + b"[" * 100_000 + b"}", "nested deeper"),  # unbalanced, still linear and bounded
        (b'{"ttl": ' + b"1" * 4401 + b"}", "digits"),
        (b'{"x": 1e999}', "out of range"),
        (b'{"x": NaN}', "NaN"),
        (b'{"x": -Infinity}', "Infinity"),
        (b'{"a": 1, "a": 2}', "twice"),
        ('{"a": "é"}'.encode("latin-1"), "UTF-8"),
        (b"{", "not valid JSON"),
    ],
)
def test_hostile_json_is_a_client_error(raw: bytes, fragment: str) -> None:
    with pytest.raises(ClientError) as err:
        parse_json(raw)
    assert err.value.code == "body_not_json"
    assert fragment in err.value.detail


@pytest.mark.parametrize("text", ["1000000000d", "9" * 20 + "s", "101y", 10**30, "0s", -5, "1x"])
def test_durations_are_bounded_and_never_overflow(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_durations_up_to_a_century() -> None:
    assert parse_duration("100y") == timedelta(days=36500)
    assert parse_duration("1h30m") == timedelta(minutes=90)


@pytest.mark.parametrize(
    ("pasted", "stored"),
    [
        ("5d60ce9d0a1b", "5d60ce9d0a1b"),
        ("5D:60:CE:9D:0A:1B", "5d60ce9d0a1b"),
        ("00:8D:60:CE", "8d60ce"),  # openssl prints a leading 00 when the high bit is set
        ("0x8d60ce", "8d60ce"),
        ("  8d 60 ce\\n".replace("\\n", "\n"), "8d60ce"),
        ("0", "0"),
    ],
)
def test_serials_are_normalised_as_openssl_prints_them(pasted: str, stored: str) -> None:
    assert normalise_serial(pasted) == stored


@pytest.mark.parametrize("bad", ["", "xyz", "12-34", "g1", "1" * 65])
def test_non_hex_serials_are_refused(bad: str) -> None:
    with pytest.raises(ClientError) as err:
        normalise_serial(bad)
    assert err.value.code == "serial_invalid"
