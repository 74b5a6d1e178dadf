"""gRPC server metrics with the go-grpc-prometheus names, recorded after each handler ran."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

from services.common.config import DEFAULT_BIND_HOST

_LABELS = ("grpc_type", "grpc_service", "grpc_method")

GRPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _LABELS)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, regardless of success or failure.",
    _LABELS + ("grpc_code",),
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC until the server finished it (streams: until the last message).",
    _LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def start_metrics_server(
    port: int, registry: CollectorRegistry = REGISTRY, *, host: str = DEFAULT_BIND_HOST
) -> tuple[object, int]:
    """Serve /metrics over HTTP on `host`:`port` (0 = ephemeral); returns (server, bound port)."""
    server, _thread = start_http_server(port, addr=host.strip("[]"), registry=registry)
    return server, server.server_port


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _split(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def _final_code(context: grpc.ServicerContext, raised: bool) -> str:
    code = context.code()
    if code is None:
        if raised:
            code = grpc.StatusCode.UNKNOWN
        elif not context.is_active():
            code = grpc.StatusCode.CANCELLED
        else:
            code = grpc.StatusCode.OK
    return code.name


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts started/handled RPCs and times them; the code is read after the handler finished."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split(handler_call_details.method)
        labels = (_rpc_type(handler), service, method)
        return rewrap_handler(
            handler,
            lambda inner: _wrap_unary(inner, labels),
            lambda inner: _wrap_streaming(inner, labels),
        )


def rewrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap_unary: Callable[[Callable], Callable],
    wrap_streaming: Callable[[Callable], Callable],
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped (for server interceptors).

    `wrap_streaming` receives handlers that return response iterators, `wrap_unary` the others.
    """
    if handler.response_streaming:
        inner = handler.stream_stream if handler.request_streaming else handler.unary_stream
        wrapped = wrap_streaming(inner)
    else:
        inner = handler.stream_unary if handler.request_streaming else handler.unary_unary
        wrapped = wrap_unary(inner)
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _record(labels: tuple[str, str, str], context, started: float, raised: bool) -> None:
    GRPC_HANDLING_SECONDS.labels(*labels).observe(time.perf_counter() - started)
    GRPC_HANDLED.labels(*labels, _final_code(context, raised)).inc()


def _wrap_unary(inner: Callable, labels: tuple[str, str, str]) -> Callable:
    def handler(request, context):
        GRPC_STARTED.labels(*labels).inc()
        started = time.perf_counter()
        raised = True
        try:
            response = inner(request, context)
            raised = False
            return response
        finally:
            _record(labels, context, started, raised)

    return handler


def _wrap_streaming(inner: Callable, labels: tuple[str, str, str]) -> Callable:
    def handler(request, context) -> Iterator:
        GRPC_STARTED.labels(*labels).inc()
        started = time.perf_counter()
        raised = True
        try:
            yield from inner(request, context)
            raised = False
        except GeneratorExit:
            raised = False  # the client went away; the context reports CANCELLED
            raise
        finally:
            _record(labels, context, started, raised)

    return handler
