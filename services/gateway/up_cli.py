"""`dynamics up`: the whole stack locally on embedded defaults (no auth, SQLite, local folder).

Starts face_detect, animator and encoder on loopback, then the gateway REST API (with its
workers) on `--port`, pointed at them. Ctrl-C or SIGTERM stops the gateway (it drains) and
then the three services.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from services.gateway.local_stack import LocalStack, StackConfig, StackError, weights_fingerprint
from services.gateway.render_cli import NOISE_WARNING, RANDOM_MARKER, default_weights_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynamics up", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080, help="gateway HTTP port")
    p.add_argument("--host", default="127.0.0.1", help="gateway bind address")
    p.add_argument("--weights", type=Path, help="LivePortrait weights folder "
                   "(default: $DYNAMICS_WEIGHTS_DIR or .dynamics/weights)")
    p.add_argument("--data-dir", type=Path, default=Path(".dynamics/gateway"),
                   help="jobs database, results and motion cache")
    p.add_argument("--device", default="auto", help="animator device: auto, cpu, cuda, ...")
    p.add_argument("--workers", type=int, default=1, help="gateway job workers")
    return p


def gateway_environ(environ: Mapping[str, str], args: argparse.Namespace, targets,
                    fingerprint: str) -> dict[str, str]:
    """The gateway's settings for a local run: no auth, local storage, our services."""
    return {
        **environ,
        "GATEWAY_AUTH_MODE": "none",
        "STORAGE_BACKEND": "local",
        "GATEWAY_PORT": str(args.port),
        "GATEWAY_DATA_DIR": str(args.data_dir),
        "GATEWAY_PUBLIC_URL": f"http://{args.host}:{args.port}",
        "GATEWAY_WORKERS": str(args.workers),
        "FACE_DETECT_ADDR": targets.face_detect,
        "ANIMATOR_ADDR": targets.animator,
        "ENCODER_ADDR": targets.encoder,
        "MODEL_FINGERPRINT": fingerprint,
    }


class _Terminated(Exception):
    """SIGTERM arrived: unwind so the gateway and the services are stopped in order."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = build_parser().parse_args(argv)
    weights = args.weights or default_weights_dir(environ)
    if not weights.is_dir():
        print(f"dynamics up: no weights at {weights}; run `bash setup.sh install` first",
              file=sys.stderr)
        return 2
    if (weights / RANDOM_MARKER).exists():
        print(NOISE_WARNING, file=sys.stderr)
    stack = LocalStack(StackConfig(weights_dir=weights, env=dict(environ),
                                   animator_device=args.device))
    print("starting face_detect, animator and encoder on loopback ...", file=sys.stderr)
    # uvicorn drains on SIGTERM, then re-raises it with the handler found at start: make that
    # handler unwind this function (so the services stop) instead of killing the process.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _serve(args, environ, weights, stack)
    except _Terminated:
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)


def _serve(args: argparse.Namespace, environ: Mapping[str, str], weights: Path,
           stack: LocalStack) -> int:
    import uvicorn

    from services.common.logging import configure_logging
    from services.gateway.config import GatewayConfig
    from services.gateway.runtime import Gateway, real_orchestrator

    try:
        targets = stack.start()
    except StackError as exc:
        print(f"dynamics up: {exc}", file=sys.stderr)
        return 1
    config = GatewayConfig.from_env(
        gateway_environ(environ, args, targets, weights_fingerprint(weights)))
    configure_logging("gateway", level=config.log_level)
    orchestrator, close_clients = real_orchestrator(config)
    gateway = Gateway.build(config, orchestrator)
    print(f"dynamics up: REST API on http://{args.host}:{args.port} "
          f"(OpenAPI at /openapi.json, no auth)", file=sys.stderr)
    try:
        uvicorn.run(gateway.app, host=args.host, port=args.port, log_config=None,
                    timeout_graceful_shutdown=int(gateway.state.drain_s) + 5)
    finally:
        gateway.close()
        close_clients()
    return 0
