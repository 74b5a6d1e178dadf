"""Entrypoint: `python -m services.gateway` / `dynamics-gateway` (REST API + job workers)."""

from __future__ import annotations

import uvicorn

from services.common.ffmpeg_safety import kill_children
from services.common.logging import configure_logging
from services.gateway.config import GatewayConfig
from services.gateway.runtime import Gateway, real_orchestrator


def main() -> None:
    config = GatewayConfig.from_env()
    configure_logging("gateway", level=config.log_level)
    orchestrator, close_clients = real_orchestrator(config)
    gateway = Gateway.build(config, orchestrator)
    try:
        # uvicorn turns SIGTERM into a graceful shutdown; the app's lifespan then drains workers.
        uvicorn.run(
            gateway.app,
            host="0.0.0.0",
            port=config.port,
            log_config=None,
            timeout_graceful_shutdown=int(gateway.state.drain_s) + 5,
        )
    finally:
        gateway.close()
        close_clients()
        # No FFmpeg/ffprobe child outlives the gateway, even one a stuck worker thread left.
        kill_children()


if __name__ == "__main__":
    main()
