"""Entrypoint: `python -m services.animator` (console script `dynamics-animator`)."""

from __future__ import annotations

from services.animator.config import AnimatorConfig
from services.animator.pipeline import AnimatorPipeline
from services.animator.servicer import SERVICE_NAME, AnimatorServicer, add_to_server
from services.common.grpc_server import GrpcService, serve_forever
from services.common.logging import configure_logging


def main() -> None:
    config = AnimatorConfig.from_env()
    configure_logging("animator", config.log_level)
    servicer = AnimatorServicer(
        max_frames=config.max_frames,
        queue_frames=config.queue_frames,
        max_jobs=config.max_jobs,
        max_wait_ms=config.max_wait_ms,
    )
    service = GrpcService(
        name="animator",
        service_names=[SERVICE_NAME],
        register=lambda server: add_to_server(servicer, server),
        port=config.port,
        metrics_port=config.metrics_port,
        grace_s=config.grace_s,
        host=config.bind_host,
        max_workers=config.max_workers,
    )

    def load() -> None:  # weights + one warm-up frame, then health flips to SERVING
        pipeline = AnimatorPipeline.from_weights(
            config.weights_dir,
            device=config.device,
            batch_size=config.batch_size,
            autocast_dtype=config.autocast_dtype,
            compile=config.compile,
            compile_mode=config.compile_mode,
            input_size=config.input_size or None,
            channels_last=config.channels_last,
            backend=config.backend,
            onnx_dir=config.onnx_dir,
            ort_providers=config.ort_providers,
            trt_cache_dir=config.trt_cache_dir,
        )
        pipeline.warm_up()
        servicer.attach(pipeline)

    serve_forever(service, load=load)


if __name__ == "__main__":
    main()
