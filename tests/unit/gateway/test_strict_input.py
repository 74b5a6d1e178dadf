"""The strict parsers behind every client-controlled number, media type, byte range and JSON
document in the gateway, and the result-link check that uses them."""

from __future__ import annotations

import time

import pytest

from services.gateway.delivery.result_links import ResultLinks
from services.gateway.delivery.webhook import sign, verify_signature
from services.gateway.net.fetch import request_target
from services.gateway.net.strict_input import (
    MAX_JSON_DEPTH,
    StrictInputError,
    load_json,
    parse_byte_ranges,
    parse_decimal,
    parse_media_type,
    parse_uint,
)

# Spellings Python's int()/float()/isdigit() accept (or half-accept) that are not plain ASCII.
NOT_UINTS = [
    "",
    " ",
    "²",
    "³",
    "¹",
    "５",
    "٣",
    "۳",
    "१",
    "Ⅻ",
    "1_000",
    " 12",
    "12 ",
    "\t1",
    "1\n",
    "+1",
    "-1",
    "0x10",
    "0o7",
    "0b1",
    "1e3",
    "1.0",
    "1,000",
    "١٢",
    "𝟏",
    "12\x00",
    "nan",
    "∞",
]


@pytest.mark.parametrize("text", NOT_UINTS)
def test_parse_uint_refuses_every_other_spelling(text: str) -> None:
    with pytest.raises(StrictInputError):
        parse_uint(text)


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("007", 7), ("123456789", 123456789), ("9" * 18, 10**18 - 1)]
)
def test_parse_uint_accepts_ascii_digits(text: str, value: int) -> None:
    assert parse_uint(text) == value


def test_parse_uint_bounds_the_digits() -> None:
    with pytest.raises(StrictInputError, match="more than 18 digits"):
        parse_uint("9" * 19)
    with pytest.raises(StrictInputError):
        parse_uint("9" * 100_000)
    assert parse_uint("9" * 20, max_digits=20) == 10**20 - 1


def test_parse_uint_refuses_non_strings() -> None:
    for value in (None, 5, 5.0, b"5"):
        with pytest.raises(StrictInputError):
            parse_uint(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "inf",
        "-inf",
        "nan",
        "NaN",
        "Infinity",
        "1e3",
        "1E3",
        "1_0",
        " 5",
        "5 ",
        "5.",
        ".5",
        "+5",
        "５",
        "²",
        "0x1",
        "1.2.3",
        "",
        "-",
        "1" * 40,
        "1,5",
    ],
)
def test_parse_decimal_refuses_every_other_spelling(text: str) -> None:
    with pytest.raises(StrictInputError):
        parse_decimal(text)


@pytest.mark.parametrize(
    ("text", "value"), [("5", 5.0), ("2.5", 2.5), ("-1", -1.0), ("10.000", 10.0), ("0.25", 0.25)]
)
def test_parse_decimal_accepts_plain_decimals(text: str, value: float) -> None:
    assert parse_decimal(text) == value


@pytest.mark.parametrize(
    ("header", "essence", "params"),
    [
        ("application/json", "application/json", {}),
        ("APPLICATION/JSON", "application/json", {}),
        ("Application/Json ; Charset=UTF-8", "application/json", {"charset": "UTF-8"}),
        ('application/json; charset="utf-8"', "application/json", {"charset": "utf-8"}),
        ("application/json;", "application/json", {}),
        ("multipart/form-data; BOUNDARY=AbC", "multipart/form-data", {"boundary": "AbC"}),
        ('multipart/form-data; boundary="a b=c"', "multipart/form-data", {"boundary": "a b=c"}),
        ('multipart/form-data; boundary="q\\"x"', "multipart/form-data", {"boundary": 'q"x'}),
        ("application/jsonp", "application/jsonp", {}),
        ("application/json-patch+json", "application/json-patch+json", {}),
    ],
)
def test_media_types_parse_case_insensitively(header, essence, params) -> None:
    media = parse_media_type(header)
    assert media.essence == essence and media.params == params


@pytest.mark.parametrize(
    "header",
    [
        "",
        "json",
        "application/",
        "/json",
        "application/json junk",
        "application/json; charset",
        "application/json; charset=",
        "application/json; =utf-8",
        "application/json; a=1; A=2",
        'application/json; charset="utf-8',
        "application/js\u00b2n",
        "application/json; c=\u00e9",
        "application/json, text/plain",
        "application /json",
        "text/plain; charset=utf-8 x",
    ],
)
def test_malformed_media_types_are_refused(header: str) -> None:
    with pytest.raises(StrictInputError):
        parse_media_type(header)


@pytest.mark.parametrize(
    ("header", "ranges"),
    [
        ("bytes=0-9", [(0, 9)]),
        ("bytes=-10", [(90, 99)]),
        ("bytes=-1000", [(0, 99)]),
        ("bytes=90-", [(90, 99)]),
        ("bytes=95-200", [(95, 99)]),
        ("Bytes = 0-0 , 5-6", [(0, 0), (5, 6)]),
        ("bytes=0-1, 500-600", [(0, 1)]),
    ],
)
def test_byte_ranges(header: str, ranges: list[tuple[int, int]]) -> None:
    assert parse_byte_ranges(header, 100) == ranges


@pytest.mark.parametrize(
    "header",
    [
        "bytes=²-5",
        "bytes=１-５",
        "bytes=1_0-20",
        "bytes=+1-5",
        "bytes=0x1-5",
        "bytes=5-2",
        "bytes=",
        "bytes=-",
        "bytes=1",
        "bytes=1-2-3",
        "items=0-5",
        "bytes 0-5",
        "bytes=0-1,",
        "bytes=" + ",".join(["0-1"] * 17),
        "bytes=" + "9" * 40 + "-",
    ],
)
def test_malformed_byte_ranges(header: str) -> None:
    with pytest.raises(StrictInputError) as err:
        parse_byte_ranges(header, 100)
    assert err.value.code in ("bad_range", "invalid")


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0", "bytes=500-600, 100-"])
def test_unsatisfiable_byte_ranges(header: str) -> None:
    with pytest.raises(StrictInputError) as err:
        parse_byte_ranges(header, 100)
    assert err.value.code == "range_not_satisfiable"


def test_no_range_is_satisfiable_in_an_empty_file() -> None:
    with pytest.raises(StrictInputError):
        parse_byte_ranges("bytes=-5", 0)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
        b"[" * 100_000,  # unbalanced: still refused for depth, not parsed
    ],
)
def test_json_deeper_than_the_limit(raw: bytes) -> None:
    with pytest.raises(StrictInputError) as err:
        load_json(raw)
    assert err.value.code == "json_too_deep"


def test_json_at_the_depth_limit_and_brackets_inside_strings() -> None:
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert load_json(nested) is not None
    assert load_json(b'{"a": "' + b"[" * 10_000 + b'"}') == {"a": "[" * 10_000}
    assert load_json(b'["\\"[[[[", 1]') == ['"[[[[', 1]


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b"[Infinity]",
        b"[-Infinity]",
        b'{"a": NaN}',
        b"1e999",
        b"-1e999",
        b"[1E400]",
        b'{"a": 1, "a": 1}',
        b'{"a": {"b": 1, "b": 2}}',
        b'"\\ud800"',
        b'"\\udfff"',
        b'{"\\ud800": 1}',
        b'["a\\udc00b"]',
        b"9" * 5000,
        b"\xff",
        b'"\xed\xa0\x80"',
        b"\xef\xbb\xbf{}",
        '{"a": 1}'.encode("utf-16"),
        b"{'a': 1}",
        b"[1,]",
        b"",
        b"\x00",
        b"[1] [2]",
        b'"\\x41"',
        b"01",
    ],
)
def test_malformed_json(raw: bytes) -> None:
    with pytest.raises(StrictInputError) as err:
        load_json(raw)
    assert err.value.code == "malformed_json"
    assert err.value.message


def test_json_that_is_fine() -> None:
    assert load_json(b'{"a": [1, 2.5, -0.0, 1e308, "\\ud83d\\ude00", null, true]}') == {
        "a": [1, 2.5, -0.0, 1e308, "\U0001f600", None, True]
    }
    assert load_json('{"seconds": 5}') == {"seconds": 5}
    assert load_json(b"9" * 4000) == int("9" * 4000)


@pytest.mark.parametrize(
    "raw",
    [
        '"' + '\\"' * 50_000,  # an unterminated string of escaped quotes
        '"' * 100_001,
        "[" * 500_000 + "]" * 500_000,
        "[]" * 500_000,
        '["' + "\\\\" * 200_000 + '"]',
    ],
)
def test_pathological_json_is_refused_quickly(raw: str) -> None:
    started = time.perf_counter()
    try:
        load_json(raw)
    except StrictInputError:
        pass
    assert time.perf_counter() - started < 2.0


def _links(now: float = 1_000_000.0) -> ResultLinks:
    return ResultLinks("http://gw", "secret", ttl_s=3600, clock=lambda: now)


def test_result_link_round_trip_and_forgeries() -> None:
    links = _links()
    url = links.url("job1")
    query = dict(part.split("=") for part in url.split("?", 1)[1].split("&"))
    expires, sig = query["expires"], query["sig"]
    assert links.verify("job1", expires, sig)
    forgeries = [
        ("job2", expires, sig),
        ("job1", "0" + expires, sig),
        ("job1", expires, sig.upper()),
        ("job1", " " + expires, sig),
        ("job1", expires + "\n", sig),
        ("job1", "+" + expires, sig),
        ("job1", "²", sig),
        ("job1", "５" * 7, sig),
        ("job1", "٣" * 10, sig),
        ("job1", "9" * 13, sig),
        ("job1", expires, sig[:-1] + "é"),
        ("job1", expires, "é" * 64),
        ("job1", expires, sig + "0"),
        ("job1", expires, ""),
        ("job1", "", sig),
        ("job1", str(int(expires) + 3600), sig),
    ]
    for job_id, when, signature in forgeries:
        assert not links.verify(job_id, when, signature), (job_id, when, signature)


def test_result_link_expires() -> None:
    url = _links(1_000_000.0).url("job1")
    query = dict(part.split("=") for part in url.split("?", 1)[1].split("&"))
    assert not _links(2_000_000.0).verify("job1", query["expires"], query["sig"])


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://h", "/"),
        ("https://h?x=1", "/?x=1"),
        ("https://h/a#frag", "/a"),
        ("https://h/vid\u00e9o?q=\u00fc", "/vid%C3%A9o?q=%C3%BC"),
        ("https://h/a%20b", "/a%20b"),
        ("https://h/p;a=1/[x]~", "/p;a=1/[x]~"),
    ],
)
def test_request_target_is_ascii(url: str, target: str) -> None:
    assert request_target(url) == target


def test_webhook_signature_check_takes_any_header() -> None:
    secret = "whsec_" + "A" * 32  # 24 zero bytes
    good = sign(secret, "msg_1", "1700000000", b"{}")
    assert verify_signature(secret, "msg_1", "1700000000", b"{}", good)
    assert verify_signature(secret, "msg_1", "1700000000", b"{}", "v1,old " + good)
    for header in ("", good.upper(), good[:-1] + "\u00e9", "\ud800", "v1," + "\uff10" * 44):
        assert not verify_signature(secret, "msg_1", "1700000000", b"{}", header)
