"""Client channels with deadlines, retries (gRPC service config) and message-size limits.

Balancing: a target such as `dns:///dynamics-animator:50052` (a headless Service) resolves to
every pod and `round_robin` spreads calls over them. With `make_channel(health_checked=True)`
client-side health checking (the standard health service's Watch) also takes a pod out of the
rotation the moment it reports NOT_SERVING (loading, draining); calls then wait for a serving
pod instead of being refused, and `check_health` over such a channel answers UNREACHABLE rather
than NOT_SERVING when no pod serves. The name is resolved again when a connection is lost or closed by the server's
connection age (GOAWAY), at most once per `GRPC_DNS_MIN_RESOLUTION_S` (default 5 s; gRPC's own
default is 30 s); a lost pod is reconnected with backoff capped at `GRPC_MAX_RECONNECT_BACKOFF_S`
(default 10 s; gRPC's own is 120 s).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence

import grpc
from dynamics.v1 import (  # noqa: F401 - registers the service descriptors looked up below
    animator_pb2,
    encoder_pb2,
    face_detect_pb2,
)
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import env_float
from services.common.grpc_server import MAX_MESSAGE_BYTES

DEFAULT_DNS_MIN_RESOLUTION_S = 5.0
DEFAULT_MAX_RECONNECT_BACKOFF_S = 10.0


def retry_service_config(
    service_names: Sequence[str],
    *,
    max_attempts: int = 4,
    initial_backoff_s: float = 0.2,
    max_backoff_s: float = 5.0,
    retryable: Sequence[str] = ("UNAVAILABLE",),
    health_checked: bool = False,
) -> str:
    """gRPC service config (JSON) with a retry policy for the named services.

    Retries apply to unary calls only; only UNAVAILABLE is retried by default, since other codes
    mean the request itself failed. Streaming methods get no retry policy: a transparently
    retried stream whose server died before answering waited for its deadline instead of
    failing, and the caller (the job) retries streams itself.
    """
    streams = _streaming_methods(service_names)
    config = {
        # With a `dns:///` target of a headless Kubernetes Service, spread calls over all pods
        # instead of pinning every call to the first address.
        "loadBalancingConfig": [{"round_robin": {}}],
        # Skip a pod whose health says NOT_SERVING (loading, draining) without waiting for DNS.
        **(
            {"healthCheckConfig": {"serviceName": service_names[0]}}
            if health_checked and service_names
            else {}
        ),
        "methodConfig": [
            {
                "name": [{"service": name} for name in service_names],
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": f"{initial_backoff_s}s",
                    "maxBackoff": f"{max_backoff_s}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": list(retryable),
                },
                "waitForReady": True,
            }
        ]
        + ([{"name": streams, "waitForReady": True}] if streams else []),
    }
    return json.dumps(config)


def _streaming_methods(service_names: Sequence[str]) -> list[dict[str, str]]:
    """Method names (service config form) of the client- or server-streaming RPCs."""
    pool = descriptor_pool.Default()
    found = []
    for name in service_names:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            continue
        found += [
            {"service": name, "method": m.name}
            for m in service.methods
            if m.client_streaming or m.server_streaming
        ]
    return found


def resolution_options(environ: Mapping[str, str] = os.environ) -> list[tuple[str, int]]:
    """How often a `dns:` target may be resolved again and how long a lost address waits at most
    before the next connection attempt (`GRPC_DNS_MIN_RESOLUTION_S`,
    `GRPC_MAX_RECONNECT_BACKOFF_S`)."""
    min_resolution = env_float(
        environ, "GRPC_DNS_MIN_RESOLUTION_S", DEFAULT_DNS_MIN_RESOLUTION_S, minimum=0.0
    )
    max_backoff = env_float(
        environ, "GRPC_MAX_RECONNECT_BACKOFF_S", DEFAULT_MAX_RECONNECT_BACKOFF_S, minimum=0.1
    )
    return [
        ("grpc.dns_min_time_between_resolutions_ms", int(min_resolution * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(max_backoff * 1000)),
        ("grpc.initial_reconnect_backoff_ms", min(1000, int(max_backoff * 1000))),
    ]


def make_channel(
    target: str,
    *,
    service_names: Sequence[str] = (),
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    max_attempts: int = 4,
    environ: Mapping[str, str] = os.environ,
    health_checked: bool = False,
) -> grpc.Channel:
    """An insecure channel (in-cluster traffic) with retries, large-message limits and
    round_robin over every address the target resolves to; `health_checked` (with
    `service_names`) skips addresses whose health for `service_names[0]` is not SERVING."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        *resolution_options(environ),
    ]
    if service_names:
        options.append(
            (
                "grpc.service_config",
                retry_service_config(
                    service_names, max_attempts=max_attempts, health_checked=health_checked
                ),
            )
        )
    return grpc.insecure_channel(target, options=options)


def check_health(channel: grpc.Channel, service: str = "", *, timeout_s: float = 2.0) -> str:
    """Ask the standard health service; returns SERVING, NOT_SERVING, UNKNOWN or UNREACHABLE."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return "UNKNOWN"
        return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_for_serving(
    channel: grpc.Channel, service: str = "", *, timeout_s: float = 60.0, poll_s: float = 0.1
) -> bool:
    """Poll health until SERVING or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check_health(channel, service, timeout_s=min(2.0, timeout_s)) == "SERVING":
            return True
        time.sleep(poll_s)
    return False
