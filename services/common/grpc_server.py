"""The boring parts of every gRPC service, once: health, reflection, metrics, SIGTERM draining.

Lifecycle (Triton's initialize / execute / finalize):
    svc = GrpcService(name="animator", service_names=[...], register=..., port=50052, ...)
    svc.start()          # binds; health says NOT_SERVING
    ... load the model, warm up ...
    svc.set_serving()    # readiness flips to SERVING
    svc.stop(grace_s)    # health flips first; after `drain_delay_s` new RPCs are refused and
                         # in-flight ones get `grace_s` to finish

`serve_forever()` does all of that for `__main__` and installs the SIGTERM/SIGINT handlers.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.metrics import MetricsInterceptor, start_metrics_server

logger = logging.getLogger(__name__)

# Frames travel one per message; a 512x512 RGB frame is 786 kB and a canvas may be a few MB.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
)


class GrpcService:
    """A gRPC server with the standard health service, reflection and Prometheus metrics."""

    def __init__(
        self,
        *,
        name: str,
        service_names: Sequence[str],
        register: Callable[[grpc.Server], None],
        port: int,
        metrics_port: int | None,
        grace_s: float = 10.0,
        drain_delay_s: float = 0.0,
        max_workers: int = 8,
        maximum_concurrent_rpcs: int | None = None,
        host: str = "[::]",
    ) -> None:
        self.name = name
        self.service_names = list(service_names)
        self.grace_s = grace_s
        # Time between "health says NOT_SERVING" and "stop accepting RPCs", so load balancers and
        # Kubernetes endpoints see the flip before the listening socket closes.
        self.drain_delay_s = drain_delay_s
        self._requested_port = port
        self._requested_metrics_port = metrics_port
        self._host = host
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name),
            interceptors=[MetricsInterceptor()],
            options=SERVER_OPTIONS,
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
        self.port = self.server.add_insecure_port(f"{self._host}:{self._requested_port}")
        if self.port == 0:
            raise OSError(f"{self.name}: could not bind port {self._requested_port}")
        if self._requested_metrics_port is not None:
            self._metrics_http, self.metrics_port = start_metrics_server(self._requested_metrics_port)
        self.server.start()
        logger.info(
            "%s listening", self.name, extra={"port": self.port, "metrics_port": self.metrics_port}
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
        self.server.stop(grace).wait()
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


def serve_forever(service: GrpcService, load: Callable[[], None] | None = None) -> None:
    """Start, load (model, tools), flip to SERVING, and block until SIGTERM/SIGINT drained it.

    The port is bound before loading so probes see NOT_SERVING instead of connection refused.
    """

    def _drain(signum, _frame) -> None:
        logger.info("signal %s received", signal.Signals(signum).name)
        threading.Thread(target=service.stop, name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, _drain)
    signal.signal(signal.SIGINT, _drain)
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
