"""The boring parts of every gRPC service, once: health, reflection, metrics, SIGTERM draining.

Lifecycle (Triton's initialize / execute / finalize):
    svc = GrpcService(name="animator", service_names=[...], register=..., port=50052, ...)
    svc.start()          # binds; health says NOT_SERVING
    ... load the model, warm up ...
    svc.set_serving()    # readiness flips to SERVING
    svc.stop(grace_s)    # health flips first; after `drain_delay_s` new RPCs are refused and
                         # in-flight ones get `grace_s` to finish

`serve_forever()` does all of that for `__main__` and installs the SIGTERM/SIGINT handlers.

Connections age out: after `max_connection_age_s` (+-10 % jitter, gRPC's) the server sends
GOAWAY on a connection; calls already running on it keep going for up to
`max_connection_age_grace_s`, new calls go to a new connection, and a client with a `dns:///`
target re-resolves the name on the GOAWAY, so pods added behind a headless Service receive work
within about one connection age. Each service reads both from its environment
(`<SERVICE>_MAX_CONNECTION_AGE_S`, else `GRPC_MAX_CONNECTION_AGE_S`; the same for `..._GRACE_S`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.config import DEFAULT_BIND_HOST, env_float
from services.common.metrics import MetricsInterceptor, rewrap_handler, start_metrics_server

logger = logging.getLogger(__name__)

# After the last in-flight RPC returned, time for its final messages and status to leave the
# socket before the server is torn down (a torn-down transport can drop them, and the client
# then sees UNAVAILABLE for a call that had in fact finished).
LINGER_S = 0.5

# Frames travel one per message (a 512x512 RGB frame is 786 kB); large payloads (the photo, audio,
# the MP4) travel in chunks. The photo in DetectSource is one message, so MAX_IMAGE_BYTES stays
# below this limit.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
)

# A connection is closed (GOAWAY) after this long so clients re-resolve and spread over new pods.
DEFAULT_MAX_CONNECTION_AGE_S = 30.0
# Calls running on an aged-out connection may finish within this; it is longer than any call
# (an Animate stream of a 10 s clip takes seconds on a GPU, minutes on a CPU), so aging out never
# cuts a call; the clients' deadlines bound stuck ones.
DEFAULT_MAX_CONNECTION_AGE_GRACE_S = 900.0


def connection_age_s(name: str, environ: Mapping[str, str] = os.environ) -> tuple[float, float]:
    """(max connection age, grace) in seconds for service `name` (`face_detect`, `animator`, ...):
    `<NAME>_MAX_CONNECTION_AGE_S` / `<NAME>_MAX_CONNECTION_AGE_GRACE_S`, else the
    `GRPC_MAX_CONNECTION_AGE_S` / `GRPC_MAX_CONNECTION_AGE_GRACE_S`, else the defaults."""
    prefix = name.upper()
    values = []
    for suffix, default in (
        ("MAX_CONNECTION_AGE_S", DEFAULT_MAX_CONNECTION_AGE_S),
        ("MAX_CONNECTION_AGE_GRACE_S", DEFAULT_MAX_CONNECTION_AGE_GRACE_S),
    ):
        fallback = env_float(environ, f"GRPC_{suffix}", default, minimum=0.1)
        values.append(env_float(environ, f"{prefix}_{suffix}", fallback, minimum=0.1))
    return values[0], values[1]


def drain_delay_from_env(name: str, environ: Mapping[str, str] = os.environ) -> float:
    """Seconds between health NOT_SERVING and refusing new calls on SIGTERM:
    `<NAME>_DRAIN_DELAY_S`, else `GRPC_DRAIN_DELAY_S`, else 0. Behind a `dns:///` target, set it
    above the connection age plus the clients' `GRPC_DNS_MIN_RESOLUTION_S`: clients then
    re-resolve (the address is gone from DNS) before the server refuses anything, and no call is
    refused during a rollout."""
    fallback = env_float(environ, "GRPC_DRAIN_DELAY_S", 0.0, minimum=0.0)
    return env_float(environ, f"{name.upper()}_DRAIN_DELAY_S", fallback, minimum=0.0)


def server_options(
    max_connection_age_s: float, max_connection_age_grace_s: float
) -> tuple[tuple[str, int], ...]:
    """SERVER_OPTIONS plus the connection age and its grace."""
    return SERVER_OPTIONS + (
        ("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(max_connection_age_grace_s * 1000)),
    )


class DrainGate(grpc.ServerInterceptor):
    """Counts in-flight RPCs and, once draining, refuses new ones with UNAVAILABLE.

    The standard health and reflection services (`/grpc.*`) always pass, so probes keep getting
    an answer (NOT_SERVING) while the server drains.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._draining = False

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc."):
            return handler
        return rewrap_handler(handler, self._wrap_unary, self._wrap_streaming)

    def close_and_wait(self, timeout_s: float) -> bool:
        """Refuse new RPCs; wait until in-flight ones finished (True) or the timeout passed."""
        with self._cond:
            self._draining = True
            return self._cond.wait_for(lambda: self._active == 0, timeout_s)

    def _enter(self, context: grpc.ServicerContext) -> None:
        with self._cond:
            admitted = not self._draining
            if admitted:
                self._active += 1
        if not admitted:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry")

    def _leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _wrap_unary(self, inner):
        def handler(request, context):
            self._enter(context)
            try:
                return inner(request, context)
            finally:
                self._leave()

        return handler

    def _wrap_streaming(self, inner):
        def handler(request, context):
            self._enter(context)
            try:
                yield from inner(request, context)
            finally:
                self._leave()

        return handler


def grpc_bind_address(host: str, port: int) -> str:
    """`host:port` as gRPC's add_insecure_port wants it (IPv6 literals in brackets)."""
    bare = host.strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


class GrpcService:
    """A gRPC server with the standard health service, reflection and Prometheus metrics.

    `host` is the address both the gRPC server and the metrics endpoint listen on (the service's
    `bind_host` setting: 127.0.0.1 in `dynamics up`, the pod's interfaces in Kubernetes).
    """

    def __init__(
        self,
        *,
        name: str,
        service_names: Sequence[str],
        register: Callable[[grpc.Server], None],
        port: int,
        metrics_port: int | None,
        grace_s: float = 10.0,
        drain_delay_s: float | None = None,
        max_workers: int = 8,
        maximum_concurrent_rpcs: int | None = None,
        host: str = DEFAULT_BIND_HOST,
        max_connection_age_s: float | None = None,
        max_connection_age_grace_s: float | None = None,
    ) -> None:
        """`max_connection_age_s` / `..._grace_s` left None come from `connection_age_s(name)`,
        `drain_delay_s` left None from `drain_delay_from_env(name)`."""
        self.name = name
        self.service_names = list(service_names)
        self.grace_s = grace_s
        # Time between "health says NOT_SERVING" and "stop accepting RPCs", so load balancers and
        # Kubernetes endpoints see the flip before the listening socket closes.
        self.drain_delay_s = drain_delay_from_env(name) if drain_delay_s is None else drain_delay_s
        self._requested_port = port
        self._requested_metrics_port = metrics_port
        self._host = host
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._gate = DrainGate()
        age_s, grace_age_s = connection_age_s(name)
        self.max_connection_age_s = age_s if max_connection_age_s is None else max_connection_age_s
        self.max_connection_age_grace_s = (
            grace_age_s if max_connection_age_grace_s is None else max_connection_age_grace_s
        )
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name),
            interceptors=[MetricsInterceptor(), self._gate],
            options=server_options(self.max_connection_age_s, self.max_connection_age_grace_s),
            maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        )
        register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._metrics_http = None
        self._stopped = threading.Event()

    def start(self) -> int:
        """Bind and start; every service reports NOT_SERVING until `set_serving()`."""
        self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = grpc_bind_address(self._host, self._requested_port)
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"{self.name}: could not bind {address}")
        if self._requested_metrics_port is not None:
            self._metrics_http, self.metrics_port = start_metrics_server(
                self._requested_metrics_port, host=self._host
            )
        self.server.start()
        logger.info(
            "%s listening",
            self.name,
            extra={
                "host": self._host,
                "port": self.port,
                "metrics_port": self.metrics_port,
                "max_connection_age_s": self.max_connection_age_s,
                "max_connection_age_grace_s": self.max_connection_age_grace_s,
            },
        )
        return self.port

    def set_serving(self) -> None:
        """Mark the model/tools as loaded: readiness probes pass from now on."""
        self._set_all(health_pb2.HealthCheckResponse.SERVING)
        logger.info("%s is SERVING", self.name)

    def stop(self, grace_s: float | None = None) -> None:
        """Flip health to NOT_SERVING, refuse new RPCs, let in-flight ones finish within grace."""
        if self._stopped.is_set():
            return
        grace = self.grace_s if grace_s is None else grace_s
        logger.info("%s draining", self.name, extra={"grace_s": grace})
        self.health.enter_graceful_shutdown()
        if self.drain_delay_s > 0:
            self._stopped.wait(self.drain_delay_s)
        deadline = time.monotonic() + grace
        if self._gate.close_and_wait(grace):
            self._stopped.wait(LINGER_S)
        else:
            logger.warning("%s: in-flight RPCs outlived the %.1f s grace", self.name, grace)
        self.server.stop(max(0.0, deadline - time.monotonic())).wait()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self._stopped.set()
        logger.info("%s stopped", self.name)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `stop()` completed (True) or the timeout passed (False)."""
        return self._stopped.wait(timeout)

    def _set_all(self, status) -> None:
        self.health.set("", status)
        for service_name in self.service_names:
            self.health.set(service_name, status)


PARENT_PID_ENV = "DYNAMICS_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(environ=os.environ) -> None:
    """With DYNAMICS_PARENT_PID set (the local stack sets it), get SIGTERM when that process
    dies (Linux), and drain at once if it already has: no orphaned services.

    Done here, after exec, rather than in a `preexec_fn`: a `preexec_fn` forces a plain fork()
    of a parent that runs gRPC, and gRPC's fork handlers can then abort the child before exec
    ("epoll_wait error: Bad file descriptor", grpc/grpc#43055).
    """
    parent = environ.get(PARENT_PID_ENV, "")
    if not parent.isdigit() or sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def serve_forever(service: GrpcService, load: Callable[[], None] | None = None) -> None:
    """Start, load (model, tools), flip to SERVING, and block until SIGTERM/SIGINT drained it.

    The port is bound before loading so probes see NOT_SERVING instead of connection refused.
    """

    def _drain(signum, _frame) -> None:
        logger.info("signal %s received", signal.Signals(signum).name)
        threading.Thread(target=service.stop, name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, _drain)
    signal.signal(signal.SIGINT, _drain)
    die_with_parent()
    service.start()
    if load is not None:
        try:
            load()
        except Exception:
            logger.exception("%s failed to load; stopping", service.name)
            service.stop(0)
            raise SystemExit(1) from None
    if not service._stopped.is_set():
        service.set_serving()
    while not service.wait(timeout=1.0):
        pass
