"""A raw HTTP/1.1 client on one kept-alive socket, for requests no HTTP library would send
(non-ASCII bytes in headers and query strings, odd framing) and for asserting that the
gateway keeps the connection usable after answering them."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Self


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class ConnectionClosed(AssertionError):
    """The server closed (or reset) the connection instead of answering on it."""


class KeepAliveConnection:
    """One TCP connection to `base` (http://127.0.0.1:<port>); every request reuses it."""

    def __init__(self, base: str, timeout: float = 30.0) -> None:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(
        self,
        method: str,
        target: str | bytes,
        headers: list[tuple[str | bytes, str | bytes]] | None = None,
        body: bytes = b"",
        *,
        content_length: bool = True,
    ) -> RawResponse:
        """Send one request (header names and values may be bytes, sent as they are)."""

        def raw(value: str | bytes) -> bytes:
            return value if isinstance(value, bytes) else value.encode("utf-8")

        lines = [raw(method) + b" " + raw(target) + b" HTTP/1.1", b"Host: gateway"]
        lines += [raw(name) + b": " + raw(value) for name, value in headers or []]
        if content_length and (body or method in ("POST", "PUT", "PATCH")):
            lines.append(b"Content-Length: " + str(len(body)).encode())
        return self.send(b"\r\n".join(lines) + b"\r\n\r\n" + body)

    def send(self, data: bytes) -> RawResponse:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionClosed(f"sending failed: {exc}") from exc
        return self.read_response()

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ConnectionClosed(f"connection reset: {exc}") from exc
        if not chunk:
            raise ConnectionClosed(f"connection closed; unread: {self._buffer[:200]!r}")
        self._buffer += chunk

    def read_response(self) -> RawResponse:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            length = int(headers.get("content-length", "0"))
            while len(self._buffer) < length:
                self._fill()
            body, self._buffer = self._buffer[:length], self._buffer[length:]
        return RawResponse(int(status_line.split()[1]), headers, body)

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self._buffer:
                self._fill()
            size_line, self._buffer = self._buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(self._buffer) < size + 2:
                self._fill()
            body += self._buffer[:size]
            self._buffer = self._buffer[size + 2 :]
            if size == 0:
                return body

    def alive(self) -> bool:
        """The connection still answers: GET /healthz on it gives 200."""
        try:
            return self.request("GET", "/healthz").status == 200
        except ConnectionClosed:
            return False
