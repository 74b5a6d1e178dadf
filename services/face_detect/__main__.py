"""Entrypoint: `python -m services.face_detect` (console script `dynamics-face-detect`)."""

from __future__ import annotations

from dynamics.v1 import face_detect_pb2_grpc

from services.common.grpc_server import GrpcService, serve_forever
from services.common.logging import configure_logging
from services.face_detect.config import FaceDetectConfig
from services.face_detect.detector import FaceDetector
from services.face_detect.servicer import SERVICE_NAME, FaceDetectServicer


def main() -> None:
    config = FaceDetectConfig.from_env()
    configure_logging("face_detect", config.log_level)
    servicer = FaceDetectServicer(config)
    service = GrpcService(
        name="face_detect",
        service_names=[SERVICE_NAME],
        register=lambda server: face_detect_pb2_grpc.add_FaceDetectServiceServicer_to_server(
            servicer, server
        ),
        port=config.port,
        metrics_port=config.metrics_port,
        grace_s=config.grace_s,
        host=config.bind_host,
        max_workers=config.max_workers,
    )
    # Bound first, NOT_SERVING until the detector's weights are loaded.
    serve_forever(service, load=lambda: servicer.attach(FaceDetector.from_config(config)))


if __name__ == "__main__":
    main()
