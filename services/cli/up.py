"""`dynamics up`: the whole stack locally on embedded defaults (no auth, SQLite, local folder).

Binds the gateway's port first (a busy port fails at once, naming it), starts face_detect,
animator and encoder on 127.0.0.1, then serves the gateway REST API (with its workers) on
`--host`:`--port` (127.0.0.1 unless told otherwise), pointed at them. A service that dies is
restarted on its port (at most `--max-restarts` times within `--restart-window` seconds, with
backoff); past that budget `dynamics up` stops everything and exits with code 1, naming the
service. Ctrl-C or SIGTERM stops the gateway (it drains) and then the three services.

Exit codes: 0 stopped by Ctrl-C/SIGTERM after draining; 1 a service gave up or the gateway did
not start; 2 bad usage, an unusable weights folder, or a port that cannot be bound.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from services.cli.local_stack import LocalStack, StackConfig, StackError
from services.cli.render import NOISE_WARNING, RANDOM_MARKER, default_weights_dir
from services.common.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    exit_codes_text,
    folder_problem,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dynamics up",
        description=__doc__.splitlines()[0],
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=_port, default=8080, help="gateway HTTP port (0: any free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="gateway bind address (default 127.0.0.1; 0.0.0.0 exposes the REST API "
        "to the network, without auth). The three services always bind 127.0.0.1",
    )
    p.add_argument(
        "--weights",
        type=Path,
        help="LivePortrait weights folder (default: $DYNAMICS_WEIGHTS_DIR or .dynamics/weights)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".dynamics/gateway"),
        help="jobs database, results and motion cache",
    )
    p.add_argument("--device", default="auto", help="animator device: auto, cpu, cuda, ...")
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="animator backend (default: ANIMATOR_BACKEND, else torch); onnxruntime "
        "needs `dynamics weights export-onnx WEIGHTS` first",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gateway job slots (default 3 per animator: docs/gateway.md, Job slots)",
    )
    p.add_argument(
        "--animators",
        type=int,
        default=1,
        metavar="N",
        help="animator processes behind one target; the gateway spreads jobs over "
        "them round_robin (default 1)",
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=3,
        metavar="N",
        help="restarts of one dead service allowed within --restart-window "
        "before `dynamics up` gives up and exits (default 3)",
    )
    p.add_argument(
        "--restart-window",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="window for --max-restarts (default 300)",
    )
    return p


def _port(text: str) -> int:
    if not text.isdecimal() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
    return int(text)


def gateway_environ(
    environ: Mapping[str, str], args: argparse.Namespace, targets
) -> dict[str, str]:
    """The gateway's settings for a local run: no auth, local storage, our services."""
    return {
        **environ,
        "GATEWAY_AUTH_MODE": "none",
        "GATEWAY_WEB_UI": "true",
        "STORAGE_BACKEND": "local",
        "GATEWAY_PORT": str(args.port),
        "GATEWAY_DATA_DIR": str(args.data_dir),
        "GATEWAY_PUBLIC_URL": f"http://{_url_host(args.host)}:{args.port}",
        "GATEWAY_WORKERS": str(3 * args.animators if args.workers is None else args.workers),
        "FACE_DETECT_ADDR": targets.face_detect,
        "ANIMATOR_ADDR": targets.animator,
        "ENCODER_ADDR": targets.encoder,
    }


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def bind_gateway(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound before anything starts; OSError names host:port."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(f"cannot listen on {_url_host(host)}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise OSError(f"cannot listen on {_url_host(host)}:{port}: {reason}") from None
    sock.set_inheritable(False)
    return sock


class _Terminated(Exception):
    """SIGTERM arrived: unwind so the gateway and the services are stopped in order."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = build_parser().parse_args(argv)
    weights = args.weights or default_weights_dir(environ)
    problem = folder_problem(weights)
    if problem is not None:
        print(
            f"dynamics up: weights folder {weights}: {problem}; make one with `dynamics "
            f"weights fetch {weights}` or run `bash setup.sh install`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.max_restarts < 0 or args.restart_window <= 0:
        print("dynamics up: --max-restarts must be >= 0 and --restart-window > 0", file=sys.stderr)
        return EXIT_USAGE
    if not 1 <= args.animators <= 16 or (args.workers is not None and args.workers < 0):
        print("dynamics up: --animators must be 1-16 and --workers >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        sock = bind_gateway(args.host, args.port)
    except OSError as exc:
        print(
            f"dynamics up: {exc}; is another `dynamics up` running? (--port picks another)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    args.port = sock.getsockname()[1]
    if (weights / RANDOM_MARKER).exists():
        print(NOISE_WARNING, file=sys.stderr)
    stack = LocalStack(
        StackConfig(
            weights_dir=weights,
            env=dict(environ),
            animator_device=args.device,
            max_restarts=args.max_restarts,
            restart_window_s=args.restart_window,
            animators=args.animators,
            extra_env=({"ANIMATOR_BACKEND": args.backend} if args.backend else {}),
        )
    )
    animators = "animator" if args.animators == 1 else f"{args.animators} animators"
    print(f"starting face_detect, {animators} and encoder on 127.0.0.1 ...", file=sys.stderr)
    # uvicorn drains on SIGTERM, then re-raises it with the handler found at start: make that
    # handler unwind this function (so the services stop) instead of killing the process.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _serve(args, environ, weights, stack, sock)
    except _Terminated:
        return 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        stack.stop()
        sock.close()
        signal.signal(signal.SIGTERM, previous)


def _serve(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    weights: Path,
    stack: LocalStack,
    sock: socket.socket,
) -> int:
    import uvicorn

    from services.common.logging import configure_logging
    from services.gateway.config import GatewayConfig
    from services.gateway.runtime import Gateway, real_orchestrator

    try:
        targets = stack.start()
    except StackError as exc:
        print(f"dynamics up: {exc}", file=sys.stderr)
        return EXIT_FAILED
    config = GatewayConfig.from_env(gateway_environ(environ, args, targets))
    configure_logging("gateway", level=config.log_level)
    orchestrator, close_clients = real_orchestrator(config)
    gateway = Gateway.build(config, orchestrator)
    server = uvicorn.Server(
        uvicorn.Config(
            gateway.app,
            host=args.host,
            port=args.port,
            log_config=None,
            timeout_graceful_shutdown=int(gateway.state.drain_s) + 5,
        )
    )

    def give_up(_exc: StackError) -> None:  # a service is past its restart budget
        server.should_exit = True

    stack.supervise(on_failure=give_up)
    print(
        f"dynamics up: REST API on http://{_url_host(args.host)}:{args.port} "
        f"(try-it page at /, OpenAPI at /openapi.json, no auth)",
        file=sys.stderr,
    )
    try:
        server.run(sockets=[sock])
    finally:
        gateway.close()
        close_clients()
    if stack.failure is not None:
        print(f"dynamics up: giving up: {stack.failure}", file=sys.stderr)
        return EXIT_FAILED
    if not server.started:
        print("dynamics up: the gateway did not start (see the log above)", file=sys.stderr)
        return EXIT_FAILED
    return 0
