"""Domain exceptions and their mapping onto gRPC status codes.

Core code raises these; servicers translate them with `handle_errors`, which sends the code, a
human message and a short machine `reason` (trailing metadata `dynamics-reason`) that the gateway
maps to an HTTP status. Anything else becomes INTERNAL: the stack is logged, never sent.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable

import grpc

logger = logging.getLogger(__name__)

REASON_METADATA_KEY = "dynamics-reason"


class DynamicsError(Exception):
    """Base class: an error with a gRPC status, a machine reason and a human message."""

    status = grpc.StatusCode.INTERNAL
    default_reason = "internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason


class InvalidInputError(DynamicsError, ValueError):
    """The caller sent something unusable (corrupt image, bad option, wrong order)."""

    status = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "invalid_input"


class FaceNotFoundError(InvalidInputError):
    """No usable face where one is needed."""

    default_reason = "no_face"


class ResourceExhaustedError(DynamicsError):
    """Over capacity or over a size limit; the caller may retry later."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "resource_exhausted"


class FailedPreconditionError(DynamicsError):
    """The request is well formed but does not fit this server's state (e.g. motion made by
    another model); the caller must change the request, not just resend it here."""

    status = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "failed_precondition"


class UnavailableError(DynamicsError):
    """A dependency (model, FFmpeg, downstream service) is not available right now."""

    status = grpc.StatusCode.UNAVAILABLE
    default_reason = "unavailable"


def grpc_abort(context: grpc.ServicerContext, exc: DynamicsError) -> None:
    """Abort the RPC with the exception's code, message and reason (raises)."""
    context.set_trailing_metadata(((REASON_METADATA_KEY, exc.reason),))
    context.abort(exc.status, exc.message)


def _translate(context: grpc.ServicerContext, exc: BaseException, rpc: str) -> None:
    if isinstance(exc, DynamicsError):
        if exc.status == grpc.StatusCode.INTERNAL:
            logger.error("%s failed: %s", rpc, exc.message, exc_info=exc)
        else:
            logger.info("%s rejected (%s): %s", rpc, exc.reason, exc.message)
        grpc_abort(context, exc)
    logger.exception("%s failed with an unexpected error", rpc, exc_info=exc)
    context.set_trailing_metadata(((REASON_METADATA_KEY, "internal"),))
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {rpc}; see the service log")


def _caller_gone(exc: BaseException, context: grpc.ServicerContext, rpc: str) -> bool:
    """The request stream failed because the caller cancelled or vanished: nothing to answer."""
    if isinstance(exc, grpc.RpcError) and not context.is_active():
        logger.info("%s ended: the caller cancelled or went away", rpc)
        return True
    return False


def _is_abort(exc: BaseException, context: grpc.ServicerContext) -> bool:
    # context.abort() raises a bare Exception after setting the code; let it through untouched.
    return type(exc) is Exception and context.code() is not None


def handle_errors(method: Callable) -> Callable:
    """Decorate a servicer method (unary or streaming) so domain errors map to gRPC statuses."""
    rpc = method.__name__

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream_wrapper(self, request, context):
            try:
                yield from method(self, request, context)
            except GeneratorExit:
                raise
            except Exception as exc:
                if _is_abort(exc, context):
                    raise
                if not _caller_gone(exc, context, rpc):
                    _translate(context, exc, rpc)

        return stream_wrapper

    @functools.wraps(method)
    def unary_wrapper(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:
            if _is_abort(exc, context):
                raise
            if not _caller_gone(exc, context, rpc):
                _translate(context, exc, rpc)
            return None

    return unary_wrapper
