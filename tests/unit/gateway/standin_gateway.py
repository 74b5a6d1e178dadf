"""A gateway process whose workers use the orchestrator stand-in (for crash/restart tests).

Run as `python -m tests.unit.gateway.standin_gateway` with the usual GATEWAY_* settings;
STANDIN_BLOCK=1 makes every job wait forever before animating (a worker "stuck" mid-job).
"""

from __future__ import annotations

import os
import threading

import uvicorn

from services.common.logging import configure_logging
from services.gateway.config import GatewayConfig
from services.gateway.runtime import Gateway
from tests.unit.gateway.gateway_harness import StandInOrchestrator


def main() -> None:
    config = GatewayConfig.from_env()
    configure_logging("gateway", level=config.log_level)
    gate = threading.Event() if os.environ.get("STANDIN_BLOCK") == "1" else None
    gateway = Gateway.build(
        config, StandInOrchestrator(frames=4, frame_s=0.02, gate=gate), drain_s=1.0
    )
    try:
        uvicorn.run(gateway.app, host="127.0.0.1", port=config.port, log_config=None)
    finally:
        gateway.close()


if __name__ == "__main__":
    main()
