"""Streaming multipart parser: files go straight to disk, each under its own size limit.

Nothing is buffered whole in memory; the request is refused (413) the moment a part passes its
limit, and the partial file is left for the caller to delete with the job's upload folder.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from services.gateway.api.errors import ApiError

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 16
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,5}$")


@dataclass
class ParsedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


class _Collector:
    """The parser's callbacks: track the current part and route its bytes."""

    def __init__(self, dest: Path, file_limits: Mapping[str, int], text_fields: set[str]) -> None:
        self.dest, self.file_limits, self.text_fields = dest, file_limits, text_fields
        self.form = ParsedForm()
        self.parts = 0
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._size = 0
        self._text = bytearray()
        self._file: BinaryIO | None = None
        self.ended = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def end(self) -> None:
        self.ended = True

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise ApiError(400, "bad_multipart", f"at most {MAX_PARTS} form parts are accepted")
        self._headers, self._size, self._text = {}, 0, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name, self._header_value = b"", b""

    def headers_finished(self) -> None:
        kind, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if kind != b"form-data" or not name:
            raise ApiError(400, "bad_multipart", "every form part needs a form-data name")
        if name in self.form.fields or name in self.form.files:
            raise ApiError(400, "bad_multipart", f"form field {name!r} was sent twice")
        self._name = name
        if name in self.file_limits:
            filename = params.get(b"filename", b"").decode("utf-8", "replace")
            suffix = Path(filename).suffix.lower()
            path = self.dest / (name + (suffix if _SAFE_SUFFIX.match(suffix) else ".bin"))
            self._file = path.open("wb")
            self.form.files[name] = path
        elif name not in self.text_fields:
            raise ApiError(422, "invalid_request", f"unknown form field {name!r}")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._file is not None:
            limit = self.file_limits[self._name]
            if self._size > limit:
                raise ApiError(413, "too_large", f"{self._name!r} is larger than {limit} bytes")
            self._file.write(data[start:end])
            return
        if self._size > MAX_FIELD_BYTES:
            raise ApiError(413, "too_large", f"form field {self._name!r} is too long")
        self._text += data[start:end]

    def part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.form.sizes[self._name] = self._size
            return
        try:
            self.form.fields[self._name] = self._text.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(
                400, "bad_multipart", f"form field {self._name!r} is not UTF-8"
            ) from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def parse_multipart(
    content_type: str,
    body: AsyncIterator[bytes],
    dest: Path,
    file_limits: Mapping[str, int],
    text_fields: set[str],
) -> ParsedForm:
    """Parse a multipart/form-data body; files in `file_limits` are written into `dest`."""
    _kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "bad_multipart", "multipart body without a usable boundary")
    dest.mkdir(parents=True, exist_ok=True)
    collector = _Collector(dest, file_limits, text_fields)
    parser = MultipartParser(boundary, collector.callbacks())
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except (ApiError, ClientDisconnect):
        raise
    except Exception as exc:  # noqa: BLE001 - the parser's own errors mean a malformed body
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from None
    finally:
        collector.close()
    if not collector.ended:
        raise ApiError(400, "bad_multipart", "the multipart body is truncated")
    return collector.form
