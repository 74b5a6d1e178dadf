"""A small authoritative DNS server on loopback (UDP, stdlib only) for the fleet tests.

It answers A queries for the names it holds with their current address lists (TTL 0) and every
other query for those names with an empty NOERROR answer; names it does not hold get NXDOMAIN.
gRPC's c-ares resolver reaches it through a target with an authority,
`dns://127.0.0.1:<port>/<name>:<grpc port>`, the same resolver (and the same re-resolution on
GOAWAY or connection loss) a `dns:///` target of a Kubernetes headless Service uses.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter

_TYPE_A = 1
_CLASS_IN = 1


def _read_name(packet: bytes, offset: int) -> tuple[str, int]:
    labels = []
    while True:
        length = packet[offset]
        if length == 0:
            return ".".join(labels), offset + 1
        if length & 0xC0:  # a compression pointer never appears in a query's question
            raise ValueError("compressed name in a question")
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length


class FleetDns:
    """`set(name, [ip, ...])` changes what `name` resolves to from the next query on."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self.host, self.port = self._sock.getsockname()
        self._records: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.queries: Counter[str] = Counter()  # A queries answered, per name
        self._thread = threading.Thread(target=self._serve, name="fleet-dns", daemon=True)
        self._thread.start()

    def set(self, name: str, addresses: list[str]) -> None:
        with self._lock:
            self._records[name.rstrip(".").lower()] = list(addresses)

    def addresses(self, name: str) -> list[str]:
        with self._lock:
            return list(self._records.get(name.rstrip(".").lower(), []))

    def target(self, name: str, port: int) -> str:
        """The gRPC target that resolves `name` through this server."""
        return f"dns://{self.host}:{self.port}/{name}:{port}"

    def close(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                packet, peer = self._sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self.answer(packet)
            except (ValueError, IndexError, struct.error):
                continue
            try:
                self._sock.sendto(reply, peer)
            except OSError:
                return

    def answer(self, packet: bytes) -> bytes:
        """The reply to one query packet."""
        ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
        if qdcount != 1:
            raise ValueError("one question per query")
        name, end = _read_name(packet, 12)
        qtype, qclass = struct.unpack("!HH", packet[end : end + 4])
        question = packet[12 : end + 4]
        with self._lock:
            known = name.lower() in self._records
            addresses = list(self._records.get(name.lower(), []))
        answers = b""
        count = 0
        if known and qtype == _TYPE_A and qclass == _CLASS_IN:
            self.queries[name.lower()] += 1
            for address in addresses:
                # pointer to the question's name (offset 12), type A, class IN, TTL 0, 4 bytes
                answers += struct.pack("!HHHIH", 0xC00C, _TYPE_A, _CLASS_IN, 0, 4)
                answers += socket.inet_aton(address)
                count += 1
        rcode = 0 if known else 3
        # QR=1, opcode copied, AA=1, RD copied, RA=1
        reply_flags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        header = struct.pack("!HHHHHH", ident, reply_flags, 1, count, 0, 0)
        return header + question + answers
