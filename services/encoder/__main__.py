"""Entrypoint: `python -m services.encoder` (console script `dynamics-encoder`)."""

from __future__ import annotations

import logging

from dynamics.v1 import encoder_pb2_grpc

from services.common.ffmpeg_safety import kill_children
from services.common.grpc_server import GrpcService, serve_forever
from services.common.logging import configure_logging
from services.encoder.config import EncoderConfig
from services.encoder.ffmpeg import check_tools
from services.encoder.servicer import SERVICE_NAME, EncoderServicer

logger = logging.getLogger(__name__)


def main() -> None:
    config = EncoderConfig.from_env()
    configure_logging("encoder", config.log_level)
    servicer = EncoderServicer(config)
    service = GrpcService(
        name="encoder",
        service_names=[SERVICE_NAME],
        register=lambda s: encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, s),
        port=config.port,
        metrics_port=config.metrics_port,
        grace_s=config.grace_s,
        host=config.bind_host,
    )
    # Readiness stays NOT_SERVING until FFmpeg is found and has libx264 and aac.
    try:
        serve_forever(
            service,
            load=lambda: logger.info(
                "ffmpeg checked", extra={"version": check_tools(config.ffmpeg, config.ffprobe)}
            ),
        )
    finally:
        # Drained (or the grace ran out): no FFmpeg outlives the service, even while a stuck
        # handler thread keeps the interpreter from exiting.
        kill_children()


if __name__ == "__main__":
    main()
