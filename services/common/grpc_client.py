"""Client channels with deadlines, retries (gRPC service config) and message-size limits."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import grpc
from dynamics.v1 import (  # noqa: F401 - registers the service descriptors looked up below
    animator_pb2,
    encoder_pb2,
    face_detect_pb2,
)
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_server import MAX_MESSAGE_BYTES


def retry_service_config(
    service_names: Sequence[str],
    *,
    max_attempts: int = 4,
    initial_backoff_s: float = 0.2,
    max_backoff_s: float = 5.0,
    retryable: Sequence[str] = ("UNAVAILABLE",),
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
        ] + ([{"name": streams, "waitForReady": True}] if streams else []),
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
        found += [{"service": name, "method": m.name} for m in service.methods
                  if m.client_streaming or m.server_streaming]
    return found


def make_channel(
    target: str,
    *,
    service_names: Sequence[str] = (),
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    max_attempts: int = 4,
) -> grpc.Channel:
    """An insecure channel (in-cluster traffic) with retries and large-message limits."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    if service_names:
        options.append(
            ("grpc.service_config", retry_service_config(service_names, max_attempts=max_attempts))
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
