"""SSRF-safe media fetcher: address checks at every hop, a pinned IP, size and time limits.

A URL is fetched only when its scheme is https (plain http only when configured), its host is a
name or a canonically spelled IP, and every address the name resolves to is public. The check
runs again on every redirect. The connection goes to the exact address that was checked (the
Host header and TLS SNI keep the name), so a DNS answer that changes between the check and the
connect (rebinding) cannot redirect the download. Size and wall-clock limits hold while bytes
arrive; a watchdog closes the socket at the deadline or when the job is cancelled.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

from services.common.errors import InvalidInputError
from services.gateway.net.pinned import pinned_connection
from services.gateway.net.strict_input import StrictInputError, parse_uint

Resolver = Callable[[str, int], Sequence[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MIB = 1024 * 1024
_CHUNK = 64 * 1024
# Cloud metadata endpoints: refused even inside a trusted network.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Anything made only of digits, dots and hex prefixes that is not a canonical dotted quad is
# an IPv4 spelling that some resolvers accept (2130706433, 0177.0.0.1, 0x7f.1, 127.1).
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*$", re.IGNORECASE)
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$", re.IGNORECASE)
# Characters a request target keeps as they are; anything else (non-ASCII) is percent-encoded
# as UTF-8, since an HTTP request line is ASCII.
_TARGET_SAFE = "/%:@!$&'()*+,;=?~[]-._"


class FetchError(InvalidInputError):
    """A URL was refused or its download failed; `reason` says which rule or failure."""

    default_reason = "fetch_failed"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of the fetcher. `trusted_networks` (CIDRs) are exempt from the private-address
    rule, for in-cluster media servers and tests; metadata addresses stay refused."""

    allow_http: bool = False
    max_bytes: int = 200 * MIB
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    max_redirects: int = 5
    trusted_networks: tuple[str, ...] = ()
    ca_file: str | None = None
    user_agent: str = "dynamics-gateway/1"


@dataclass(frozen=True)
class FetchResult:
    """A finished download."""

    path: Path
    size: int
    final_url: str
    content_type: str


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses the system resolver gives for `host` (TCP)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc}", reason="dns_failed") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def address_refusal(ip: IPAddress, trusted: Sequence[ipaddress._BaseNetwork] = ()) -> str | None:
    """Why `ip` must not be contacted, or None when it may be."""
    if ip in _METADATA:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in _embedded_ipv4(ip):
            why = address_refusal(inner, trusted)
            if why:
                return f"an IPv6 address embedding {inner} ({why})"
    if any(ip.version == net.version and ip in net for net in trusted):
        return None
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_private, "a private address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    return next((why for bad, why in checks if bad), None)


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        raise FetchError(
            f"host {host!r} is an IP address in a non-canonical spelling", reason="url_refused"
        )
    return None


def _valid_hostname(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


def request_target(url: str) -> str:
    """The path and query of `url` as an ASCII request target."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return quote(target, safe=_TARGET_SAFE)


def declared_length(resp: http.client.HTTPResponse, url: str) -> int | None:
    """The response's Content-Length, or None when it has none; a length that is not one
    plain ASCII number (`\xb2`, `+5`, `1_0`, `5, 5`), or one sent beside chunked transfer
    coding, is a broken response (RFC 9112 §6.3) and fails the download."""
    raw = resp.getheader("Content-Length")
    if raw is None:
        return None
    if resp.chunked:
        raise FetchError(
            f"{url!r} sent both Content-Length and chunked Transfer-Encoding",
            reason="fetch_failed",
        )
    try:
        return parse_uint(raw.strip(" \t"), max_digits=19, what="Content-Length")
    except StrictInputError:
        raise FetchError(
            f"{url!r} sent an invalid Content-Length: {raw[:40]!r}", reason="fetch_failed"
        ) from None


class MediaFetcher:
    """Downloads user-supplied URLs under a `FetchPolicy`; `resolver` is injectable for tests."""

    def __init__(self, policy: FetchPolicy = FetchPolicy(), resolver: Resolver = system_resolver):
        self.policy = policy
        self.resolver = resolver
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in policy.trusted_networks]
        self._tls = ssl.create_default_context(cafile=policy.ca_file)

    def check_url(self, url: str) -> tuple[str, str, int, str]:
        """Validate `url` and resolve it; returns (scheme, host, port, checked IP)."""
        if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url.strip()):
            raise FetchError(
                "URLs may not contain spaces or control characters", reason="url_refused"
            )
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise FetchError(f"malformed URL {url!r}: {exc}", reason="url_refused") from exc
        scheme = parts.scheme.lower()
        allowed = ("https", "http") if self.policy.allow_http else ("https",)
        if scheme not in allowed:
            raise FetchError(
                f"URL scheme {scheme or '(none)'!r} is not allowed (use {' or '.join(allowed)})",
                reason="url_refused",
            )
        if parts.username is not None or parts.password is not None:
            raise FetchError("URLs with credentials are not allowed", reason="url_refused")
        host = (parts.hostname or "").lower()
        if not host:
            raise FetchError(f"URL {url!r} has no host", reason="url_refused")
        port = port or (443 if scheme == "https" else 80)
        literal = _literal_ip(host)
        if literal is None and not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")  # internationalised names
            except UnicodeError as exc:
                raise FetchError(
                    f"host {host!r} is not a valid name", reason="url_refused"
                ) from exc
        if literal is None and not _valid_hostname(host):
            raise FetchError(f"host {host!r} is not a valid name", reason="url_refused")
        answers = [str(literal)] if literal is not None else list(self.resolver(host, port))
        if not answers:
            raise FetchError(f"host {host!r} did not resolve", reason="dns_failed")
        for answer in answers:
            ip = ipaddress.ip_address(answer.split("%")[0])
            why = address_refusal(ip, self._trusted)
            if why:
                raise FetchError(
                    f"host {host!r} resolves to {ip}, {why}; refusing to fetch",
                    reason="url_refused",
                )
        return scheme, host, port, answers[0]

    def fetch(self, url: str, dest: Path, cancel: threading.Event | None = None) -> FetchResult:
        """Download `url` into `dest` (written atomically); raises `FetchError`."""
        cancel = cancel or threading.Event()
        deadline = time.monotonic() + self.policy.timeout_s
        current = url
        for _ in range(self.policy.max_redirects + 1):
            scheme, host, port, ip = self.check_url(current)
            location = self._one_hop(scheme, host, port, ip, current, dest, deadline, cancel)
            if isinstance(location, FetchResult):
                return location
            current = urljoin(current, location)
        raise FetchError(
            f"more than {self.policy.max_redirects} redirects from {url!r}", reason="fetch_failed"
        )

    def _one_hop(self, scheme, host, port, ip, url, dest, deadline, cancel):
        """One request; returns a redirect target (str) or the finished `FetchResult`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"download of {url!r} timed out", reason="fetch_timeout")
        timeout = min(self.policy.connect_timeout_s, remaining)
        conn = pinned_connection(scheme, host, port, ip, timeout, self._tls)
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(conn, done, cancel, remaining), daemon=True
        )
        watchdog.start()
        try:
            path = request_target(url)
            conn.request("GET", path, headers={"User-Agent": self.policy.user_agent})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchError(f"redirect without Location from {url!r}")
                return location
            if resp.status != 200:
                raise FetchError(f"{url!r} answered HTTP {resp.status}", reason="fetch_failed")
            size = self._save(resp, url, dest, deadline, cancel)
            return FetchResult(dest, size, url, resp.getheader("Content-Type") or "")
        except (OSError, http.client.HTTPException) as exc:
            if cancel.is_set():
                raise FetchError("download cancelled", reason="cancelled") from exc
            if time.monotonic() >= deadline:
                raise FetchError(f"download of {url!r} timed out", reason="fetch_timeout") from exc
            raise FetchError(f"download of {url!r} failed: {exc}", reason="fetch_failed") from exc
        finally:
            done.set()
            conn.close()

    @staticmethod
    def _watch(conn, done: threading.Event, cancel: threading.Event, remaining: float) -> None:
        """Close the socket at the deadline or on cancel, waking a blocked read."""
        end = time.monotonic() + remaining
        while not done.is_set() and not cancel.is_set() and time.monotonic() < end:
            done.wait(min(0.1, max(0.0, end - time.monotonic())))
        if not done.is_set() and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _save(self, resp, url: str, dest: Path, deadline: float, cancel: threading.Event) -> int:
        limit = self.policy.max_bytes
        declared = declared_length(resp, url)
        if declared is not None and declared > limit:
            raise FetchError(
                f"{url!r} is {declared} bytes, over the limit of {limit}", reason="too_large"
            )
        part = dest.with_name(dest.name + ".part")
        total = 0
        try:
            with open(part, "wb") as out:
                while True:
                    if cancel.is_set():
                        raise FetchError("download cancelled", reason="cancelled")
                    if time.monotonic() >= deadline:
                        raise FetchError(f"download of {url!r} timed out", reason="fetch_timeout")
                    chunk = resp.read1(_CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        raise FetchError(
                            f"{url!r} is over the size limit of {limit} bytes", reason="too_large"
                        )
                    out.write(chunk)
            if cancel.is_set():
                raise FetchError("download cancelled", reason="cancelled")
            if time.monotonic() >= deadline:
                raise FetchError(f"download of {url!r} timed out", reason="fetch_timeout")
            if declared is not None and total != declared:
                raise FetchError(f"{url!r} ended after {total} of {declared} bytes")
            part.replace(dest)
        finally:
            part.unlink(missing_ok=True)
        return total
