"""Strict parsers for what a client (or a fetched server) controls: decimal numbers, media
types, byte ranges and JSON.

Python's own parsers are lenient in ways that matter here: `int()` accepts signs, spaces,
underscores and the digits of every script ('５', '٣'), `str.isdigit()` admits characters that
`int()` then refuses ('²'), and `json.loads` accepts NaN and Infinity, keeps lone surrogates,
lets the last of duplicate keys win and recurses once per nesting level. Every parser here
accepts one plain spelling and raises `ValueError` (a `StrictInputError`) for anything else, so
callers answer a precise 4xx instead of an internal error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

MAX_JSON_DEPTH = 32
MAX_RANGES = 16

_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# RFC 9110 token and quoted-string.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_MEDIA_TYPE = re.compile(rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*")
_PARAMETER = re.compile(rf";[ \t]*(?:({_TOKEN})=({_TOKEN}|{_QUOTED}))?[ \t]*")
# A JSON string, or an unterminated one up to the end (one pass, no backtracking).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_RANGE_SPEC = re.compile(r"[ \t]*(?:([0-9]+)-([0-9]*)|-([0-9]+))[ \t]*")


class StrictInputError(ValueError):
    """A value that does not have the one accepted spelling; `message` says why."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.message, self.code = message, code


def parse_uint(text: str, *, max_digits: int = 18, what: str = "value") -> int:
    """A non-negative decimal integer spelled only with ASCII digits (leading zeros allowed).

    `max_digits` bounds the work and the size of the result (18 digits fit in 63 bits)."""
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        raise StrictInputError(f"{what} must be a decimal number (ASCII digits only)")
    if len(text) > max_digits:
        raise StrictInputError(f"{what} has more than {max_digits} digits")
    return int(text)


def parse_decimal(text: str, *, what: str = "value") -> float:
    """A plain decimal number as a form field spells it: `-?[0-9]+(.[0-9]+)?`, at most 32
    characters; no exponent, spaces, underscores, inf/nan or non-ASCII digits."""
    if not isinstance(text, str) or len(text) > 32 or not _DECIMAL.fullmatch(text):
        raise StrictInputError(f"{what} must be a plain decimal number like 5 or 2.5")
    return float(text)


@dataclass(frozen=True)
class MediaType:
    """A parsed Content-Type: lower-case `type`/`subtype`, parameters by lower-case name."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def essence(self) -> str:
        return f"{self.type}/{self.subtype}"


def parse_media_type(value: str) -> MediaType:
    """Parse `type/subtype *(; name=value)` (RFC 9110 §8.3.1).

    Type, subtype and parameter names compare case-insensitively; parameter values keep their
    case (a multipart boundary is case-sensitive) and quoted values are unescaped. A repeated
    parameter is refused: which one counts would be a guess."""
    head = _MEDIA_TYPE.match(value)
    if head is None:
        raise StrictInputError("Content-Type is not a media type like type/subtype")
    params: dict[str, str] = {}
    pos = head.end()
    while pos < len(value):
        param = _PARAMETER.match(value, pos)
        if param is None:
            raise StrictInputError("Content-Type has a malformed parameter")
        pos = param.end()
        name, raw = param.group(1), param.group(2)
        if name is None:
            continue
        name = name.lower()
        if name in params:
            raise StrictInputError(f"Content-Type repeats the parameter {name!r}")
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
    return MediaType(head.group(1).lower(), head.group(2).lower(), params)


def parse_byte_ranges(value: str, size: int) -> list[tuple[int, int]]:
    """The satisfiable ranges of a `Range: bytes=...` header as (first, last) inclusive pairs.

    Raises `StrictInputError` with code `bad_range` for a malformed header (other units, more
    than `MAX_RANGES` ranges, first > last, non-ASCII digits) and `range_not_satisfiable` when
    no range overlaps a file of `size` bytes."""
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise StrictInputError("Range must be 'bytes=first-last[, ...]'", "bad_range")
    parts = spec.split(",")
    if len(parts) > MAX_RANGES:
        raise StrictInputError(f"Range may name at most {MAX_RANGES} ranges", "bad_range")
    satisfiable: list[tuple[int, int]] = []
    for part in parts:
        found = _RANGE_SPEC.fullmatch(part)
        if found is None:
            raise StrictInputError("Range must be 'bytes=first-last[, ...]'", "bad_range")
        first_text, last_text, suffix_text = found.groups()
        if suffix_text is not None:
            suffix = parse_uint(suffix_text, what="a Range suffix length")
            if suffix > 0 and size > 0:
                satisfiable.append((max(size - suffix, 0), size - 1))
            continue
        first = parse_uint(first_text, what="a Range position")
        last = parse_uint(last_text, what="a Range position") if last_text else None
        if last is not None and last < first:
            raise StrictInputError("a Range ends before it starts", "bad_range")
        if first < size:
            satisfiable.append((first, size - 1 if last is None else min(last, size - 1)))
    if not satisfiable:
        raise StrictInputError(
            f"no requested range lies within the {size} bytes", "range_not_satisfiable"
        )
    return satisfiable


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when arrays and objects nest deeper than `limit` (strings are not looked into)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise StrictInputError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise StrictInputError(f"the number {text[:20]} is out of range")
    return number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StrictInputError(f"the key {key[:40]!r} appears twice in one object")
        result[key] = value
    return result


def _check_strings(value: Any) -> None:
    """Refuse lone surrogates (a JSON `\\ud800` escape): such strings cannot be stored or sent."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise StrictInputError("a string holds a lone UTF-16 surrogate") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def load_json(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse strict JSON (RFC 8259): UTF-8, finite numbers only, no NaN/Infinity, no duplicate
    keys, no lone surrogates, nesting at most `max_depth` levels.

    Raises `StrictInputError` with code `json_too_deep` or `malformed_json`."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StrictInputError("JSON must be UTF-8", "malformed_json") from None
    else:
        text = raw
    if json_depth_exceeds(text, max_depth):
        raise StrictInputError(f"JSON nests deeper than {max_depth} levels", "json_too_deep")
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
        _check_strings(value)
    except StrictInputError as exc:
        raise StrictInputError(exc.message, "malformed_json") from None
    except json.JSONDecodeError as exc:
        raise StrictInputError(
            f"not valid JSON ({exc.msg}; line {exc.lineno}, column {exc.colno})", "malformed_json"
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer over Python's digit limit
        raise StrictInputError(f"not valid JSON: {exc}", "malformed_json") from None
    return value
