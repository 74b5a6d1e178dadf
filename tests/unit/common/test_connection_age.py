"""Connection age and re-resolution on real gRPC servers on loopback addresses, resolved by
c-ares through a real DNS server (tests/fleet/dns.py): the resolver path a `dns:///` target of a
headless Service takes."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest

from services.common.grpc_client import make_channel, resolution_options
from services.common.grpc_server import (
    DEFAULT_MAX_CONNECTION_AGE_GRACE_S,
    DEFAULT_MAX_CONNECTION_AGE_S,
    GrpcService,
    connection_age_s,
    drain_delay_from_env,
)
from tests.fleet.dns import FleetDns

SERVICE = "test.v1.Echo"


def _shared_port(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (a headless Service's pods share one port)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as sock:
                    sock.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no shared free port")


def _echo_service(host: str, port: int, *, age_s: float, grace_s: float) -> GrpcService:
    """A GrpcService with `Who` (answers its host) and `Slow` (streams `n` replies 0.5 s apart)."""

    def who(_request, _context):
        return host.encode()

    def slow(request, _context):
        for index in range(int(request)):
            time.sleep(0.5)
            yield str(index).encode()

    def register(server):
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "Who": grpc.unary_unary_rpc_method_handler(who),
                        "Slow": grpc.unary_stream_rpc_method_handler(slow),
                    },
                ),
            )
        )

    service = GrpcService(
        name="echo",
        service_names=[SERVICE],
        register=register,
        port=port,
        metrics_port=None,
        host=host,
        max_connection_age_s=age_s,
        max_connection_age_grace_s=grace_s,
        grace_s=5.0,
    )
    service.start()
    service.set_serving()
    return service


def _who(channel: grpc.Channel) -> str:
    return channel.unary_unary(f"/{SERVICE}/Who")(b"", timeout=10, wait_for_ready=True).decode()


@pytest.fixture
def dns():
    server = FleetDns()
    yield server
    server.close()


def test_connection_age_settings_come_from_the_environment():
    assert connection_age_s("animator", {}) == (
        DEFAULT_MAX_CONNECTION_AGE_S,
        DEFAULT_MAX_CONNECTION_AGE_GRACE_S,
    )
    env = {"GRPC_MAX_CONNECTION_AGE_S": "12", "ANIMATOR_MAX_CONNECTION_AGE_GRACE_S": "400"}
    assert connection_age_s("animator", env) == (12.0, 400.0)
    assert connection_age_s("encoder", env) == (12.0, DEFAULT_MAX_CONNECTION_AGE_GRACE_S)
    assert drain_delay_from_env("animator", {}) == 0.0
    assert (
        drain_delay_from_env(
            "animator", {"GRPC_DRAIN_DELAY_S": "2", "ANIMATOR_DRAIN_DELAY_S": "40"}
        )
        == 40.0
    )
    assert drain_delay_from_env("encoder", {"GRPC_DRAIN_DELAY_S": "2"}) == 2.0
    options = dict(resolution_options({"GRPC_DNS_MIN_RESOLUTION_S": "1.5"}))
    assert options["grpc.dns_min_time_between_resolutions_ms"] == 1500
    assert options["grpc.max_reconnect_backoff_ms"] == 10_000


def test_round_robin_spreads_over_every_address_the_name_resolves_to(dns):
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = _shared_port(hosts)
    services = [_echo_service(h, port, age_s=30, grace_s=30) for h in hosts]
    dns.set("echo.fleet", hosts)
    channel = make_channel(dns.target("echo.fleet", port), service_names=[SERVICE])
    try:
        _who(channel)
        deadline = time.monotonic() + 10
        seen: dict[str, int] = {}
        while len(seen) < 2 and time.monotonic() < deadline:
            for _ in range(10):
                host = _who(channel)
                seen[host] = seen.get(host, 0) + 1
        print(f"round robin over {hosts}: {seen}")
        assert set(seen) == set(hosts), seen
    finally:
        channel.close()
        for service in services:
            service.stop(0)


def test_aged_out_connection_makes_the_client_find_a_new_address_and_keeps_a_running_stream(dns):
    hosts = ["127.0.0.4", "127.0.0.5"]
    port = _shared_port(hosts)
    first = _echo_service(hosts[0], port, age_s=1.0, grace_s=30.0)
    dns.set("echo.fleet", [hosts[0]])
    channel = make_channel(
        dns.target("echo.fleet", port),
        service_names=[SERVICE],
        environ={"GRPC_DNS_MIN_RESOLUTION_S": "0.2"},
    )
    second = None
    try:
        assert _who(channel) == hosts[0]
        # A stream that outlives the connection's age (3 s against 1 s): GOAWAY must not cut it.
        replies: list[bytes] = []
        errors: list[Exception] = []

        def stream() -> None:
            try:
                replies.extend(channel.unary_stream(f"/{SERVICE}/Slow")(b"6", timeout=30))
            except grpc.RpcError as exc:
                errors.append(exc)

        streaming = threading.Thread(target=stream)
        streaming.start()
        second = _echo_service(hosts[1], port, age_s=30, grace_s=30)
        dns.set("echo.fleet", hosts)
        queries_before = dns.queries["echo.fleet"]
        started = time.monotonic()
        seen = set()
        while hosts[1] not in seen:
            assert time.monotonic() - started < 15, f"the new address got no call: {seen}"
            seen.add(_who(channel))
            time.sleep(0.05)
        found_after = time.monotonic() - started
        streaming.join(30)
        print(
            f"new address reached after {found_after:.1f} s; "
            f"{dns.queries['echo.fleet'] - queries_before} re-resolutions; "
            f"stream across the age-out: {len(replies)} replies, errors {errors}"
        )
        assert dns.queries["echo.fleet"] > queries_before
        assert not errors and replies == [str(i).encode() for i in range(6)]
    finally:
        channel.close()
        first.stop(0)
        if second is not None:
            second.stop(0)


def test_a_draining_server_leaves_the_rotation_at_once(dns):
    hosts = ["127.0.0.6", "127.0.0.7"]
    port = _shared_port(hosts)
    services = [_echo_service(h, port, age_s=30, grace_s=30) for h in hosts]
    dns.set("echo.fleet", hosts)
    channel = make_channel(
        dns.target("echo.fleet", port), service_names=[SERVICE], health_checked=True
    )
    try:
        deadline = time.monotonic() + 10
        while {_who(channel) for _ in range(6)} != set(hosts):
            assert time.monotonic() < deadline
        services[0].health.enter_graceful_shutdown()  # what stop() does first
        time.sleep(0.5)
        after = [_who(channel) for _ in range(20)]
        print(f"after {hosts[0]} reported NOT_SERVING: {after.count(hosts[0])} of 20 calls to it")
        assert after.count(hosts[0]) == 0
    finally:
        channel.close()
        for service in services:
            service.stop(0)
