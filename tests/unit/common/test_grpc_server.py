"""GrpcService on loopback: health lifecycle, metrics after the handler, draining, error mapping.

A small real service (generic handlers, no mocks) is served by the same building blocks the four
Dynamics services use.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import FaceNotFoundError, handle_errors
from services.common.grpc_client import check_health, make_channel
from services.common.grpc_server import GrpcService, grpc_bind_address
from tests.unit.common.listening import listening_sockets

SERVICE = "dynamics.test.Echo"
_identity = (lambda b: b, lambda b: b)


class _Echo:
    """Unary echo; `fail` raises a domain error; `Count` streams N slow ticks."""

    def __init__(self) -> None:
        self.stream_started = threading.Event()

    @handle_errors
    def echo(self, request: bytes, context) -> bytes:
        if request == b"fail":
            raise FaceNotFoundError("no face in frame 3")
        if request == b"boom":
            raise RuntimeError("secret internals")
        return request

    @handle_errors
    def count(self, request: bytes, context):
        for i in range(int(request)):
            self.stream_started.set()
            time.sleep(0.1)
            yield str(i).encode()


def _register(impl: _Echo):
    def register(server: grpc.Server) -> None:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(impl.echo, *_identity),
            "Count": grpc.unary_stream_rpc_method_handler(impl.count, *_identity),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return register


@pytest.fixture()
def served():
    impl = _Echo()
    svc = GrpcService(
        name="echo",
        service_names=[SERVICE],
        register=_register(impl),
        port=0,
        metrics_port=0,
        grace_s=5.0,
        drain_delay_s=1.0,
        host="127.0.0.1",
    )
    svc.start()
    channel = make_channel(f"127.0.0.1:{svc.port}", service_names=[SERVICE])
    yield svc, impl, channel
    channel.close()
    svc.stop(0)


def _metrics(svc: GrpcService) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics_port}/metrics", timeout=5) as r:
        return r.read().decode()


def _counter(text: str, method: str, code: str) -> float:
    for line in text.splitlines():
        if (
            line.startswith("grpc_server_handled_total{")
            and f'grpc_method="{method}"' in line
            and f'grpc_code="{code}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_is_not_serving_until_loaded(served) -> None:
    svc, _, channel = served
    assert check_health(channel, SERVICE) == "NOT_SERVING"
    assert check_health(channel, "") == "NOT_SERVING"
    svc.set_serving()
    assert check_health(channel, SERVICE) == "SERVING"


def test_calls_are_counted_under_their_real_code(served) -> None:
    svc, _, channel = served
    svc.set_serving()
    echo = channel.unary_unary(f"/{SERVICE}/Echo")
    assert echo(b"hi", timeout=5) == b"hi"
    with pytest.raises(grpc.RpcError) as info:
        echo(b"fail", timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "no face in frame 3"
    assert ("dynamics-reason", "no_face") in info.value.trailing_metadata()
    with pytest.raises(grpc.RpcError) as info:
        echo(b"boom", timeout=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret internals" not in info.value.details()
    text = _metrics(svc)
    assert _counter(text, "Echo", "OK") == 1
    assert _counter(text, "Echo", "INVALID_ARGUMENT") == 1
    assert _counter(text, "Echo", "INTERNAL") == 1
    assert (
        'grpc_server_started_total{grpc_method="Echo",grpc_service="dynamics.test.Echo",grpc_type="unary"} 3.0'
        in text
    )


def test_drain_lets_in_flight_stream_finish_and_refuses_new_calls(served) -> None:
    svc, impl, channel = served
    svc.set_serving()
    count = channel.unary_stream(f"/{SERVICE}/Count")
    results: list[bytes] = []
    stream = count(b"30", timeout=30)
    reader = threading.Thread(target=lambda: results.extend(stream))
    reader.start()
    assert impl.stream_started.wait(5)
    stopper = threading.Thread(target=svc.stop, args=(10.0,))
    stopper.start()
    time.sleep(0.2)
    # Health flips first: during the drain delay the open server says NOT_SERVING.
    status = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=2
    )
    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    time.sleep(1.2)  # past the drain delay, the stream still running: new calls are refused
    with pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(f"/{SERVICE}/Echo")(b"new", timeout=2, wait_for_ready=False)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in refused.value.details()
    assert reader.is_alive(), "the stream should still be running"
    reader.join(10)
    stopper.join(15)
    assert results == [str(i).encode() for i in range(30)], "in-flight stream was cut"
    fresh = make_channel(f"127.0.0.1:{svc.port}")
    with pytest.raises(grpc.RpcError) as info:
        fresh.unary_unary(f"/{SERVICE}/Echo")(b"late", timeout=1, wait_for_ready=False)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    fresh.close()


def test_bind_address_brackets_ipv6() -> None:
    assert grpc_bind_address("127.0.0.1", 50051) == "127.0.0.1:50051"
    assert grpc_bind_address("::", 0) == "[::]:0"
    assert grpc_bind_address("[::1]", 9) == "[::1]:9"


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net (Linux)")
@pytest.mark.parametrize(
    ("host", "seen"),
    [
        ("127.0.0.1", {"127.0.0.1"}),
        # gRPC serves an IPv4 wildcard from a dual-stack socket where it can ([::])
        ("0.0.0.0", {"0.0.0.0", "::"}),
    ],
)
def test_grpc_and_metrics_listen_on_the_given_host_only(host: str, seen: set[str]) -> None:
    svc = GrpcService(
        name="echo",
        service_names=[SERVICE],
        register=_register(_Echo()),
        port=0,
        metrics_port=0,
        grace_s=0.0,
        host=host,
    )
    svc.start()
    try:
        bound = listening_sockets(os.getpid())
        for port in (svc.port, svc.metrics_port):
            addresses = {address for address, p in bound if p == port}
            assert addresses and addresses <= seen, (port, bound)
    finally:
        svc.stop(0)
