"""HTTP and HTTPS connections to one checked IP address.

Outbound requests to user-given URLs (media downloads, webhooks) check every address the host
resolves to and then connect to the exact address that was checked, so a DNS answer that
changes between the check and the connect (rebinding) cannot aim the request at another host.
The Host header, TLS SNI and the certificate check keep the name.
"""

from __future__ import annotations

import http.client
import socket
import ssl


class PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to `ip`; the Host header keeps `host`."""

    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.pinned_ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self.pinned_ip, self.port), self.timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to `ip`; SNI and the certificate check use `host`."""

    def __init__(
        self, host: str, port: int, ip: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.pinned_ip = ip

    def connect(self) -> None:
        raw = socket.create_connection((self.pinned_ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def pinned_connection(
    scheme: str, host: str, port: int, ip: str, timeout: float, tls: ssl.SSLContext
) -> http.client.HTTPConnection:
    """A connection to `ip` for a URL checked as (scheme, host, port): HTTPS with `tls` when
    the scheme is https, plain HTTP otherwise."""
    if scheme == "https":
        return PinnedHTTPSConnection(host, port, ip, timeout, tls)
    return PinnedHTTPConnection(host, port, ip, timeout)
