"""The three gRPC services as local subprocesses on loopback (for `dynamics render`/`up`, tests).

Each service gets a free loopback port chosen here (whatever its log level) and a metrics port
of 0. The stack is ready when every service's health check says SERVING; a service that exits
or stays NOT_SERVING past the timeout fails the start with the tail of its log. `stop()` sends SIGTERM
(the services drain) and kills what is still running after the grace period.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.grpc_server import PARENT_PID_ENV
from services.common.grpc_client import make_channel, wait_for_serving
from services.gateway.clients import (
    ANIMATOR_SERVICE,
    ENCODER_SERVICE,
    FACE_DETECT_SERVICE,
    ServiceTargets,
)

logger = logging.getLogger(__name__)

_SERVICES = {
    "face_detect": ("services.face_detect", "FACE_DETECT", FACE_DETECT_SERVICE),
    "animator": ("services.animator", "ANIMATOR", ANIMATOR_SERVICE),
    "encoder": ("services.encoder", "ENCODER", ENCODER_SERVICE),
}


class StackError(RuntimeError):
    """A local service did not come up."""


@dataclass(frozen=True)
class StackConfig:
    """How to run the local services. `env` is the environment they get (plus our keys);
    None passes this process's environment on, as any launched program would get it."""

    weights_dir: Path
    env: Mapping[str, str] | None = None
    animator_device: str = "cpu"
    animator_batch_size: int | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    start_timeout_s: float = 180.0
    grace_s: float = 10.0
    log_dir: Path | None = None


@dataclass
class LocalService:
    """One running service process."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    port: int | None = None
    metrics_port: int | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"

    def find_metrics_port(self) -> int | None:
        """The metrics port from the "listening" log line (logged at INFO), if present."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and str(entry.get("message", "")).endswith(" listening"):
                self.metrics_port = entry.get("metrics_port")
        return self.metrics_port


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weights_fingerprint(weights_dir: Path) -> str:
    """sha256 over the weight files (names and contents): the model part of cache keys."""
    digest = hashlib.sha256()
    for path in sorted(Path(weights_dir).rglob("*")):
        if path.is_file() and path.suffix in (".pth", ".pt", ".safetensors", ".onnx", ".yaml"):
            digest.update(path.relative_to(weights_dir).as_posix().encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:32]


class LocalStack:
    """Start/stop face_detect, animator and encoder on loopback. Use as a context manager."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.services: dict[str, LocalService] = {}
        self._own_log_dir: tempfile.TemporaryDirectory | None = None

    def _env(self, prefix: str, port: int) -> dict[str, str]:
        cfg = self.config
        inherited = os.environ if cfg.env is None else cfg.env
        env = {**inherited, "PYTHONUNBUFFERED": "1", f"{prefix}_PORT": str(port),
               f"{prefix}_METRICS_PORT": "0", f"{prefix}_GRACE_S": str(cfg.grace_s),
               PARENT_PID_ENV: str(os.getpid())}  # the service dies with this process
        env.setdefault("LOG_LEVEL", "INFO")
        if prefix == "ANIMATOR":
            env["ANIMATOR_WEIGHTS_DIR"] = str(cfg.weights_dir)
            env["ANIMATOR_DEVICE"] = cfg.animator_device
            if cfg.animator_batch_size:
                env["ANIMATOR_BATCH_SIZE"] = str(cfg.animator_batch_size)
        env.update(cfg.extra_env)
        return env

    def start(self) -> ServiceTargets:
        """Start all three services and wait until each is SERVING; raises `StackError`."""
        log_dir = self.config.log_dir
        if log_dir is None:
            self._own_log_dir = tempfile.TemporaryDirectory(prefix="dynamics-stack-")
            log_dir = Path(self._own_log_dir.name)
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for name, (module, prefix, _full) in _SERVICES.items():
                log_path = log_dir / f"{name}.log"
                port = free_port()
                with open(log_path, "wb") as log:
                    # no preexec_fn: the service sets its own parent-death signal
                    # (`die_with_parent`), so Popen need not fork a process that runs gRPC
                    proc = subprocess.Popen(
                        [sys.executable, "-m", module], env=self._env(prefix, port),
                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    )
                self.services[name] = LocalService(name, proc, log_path, port)
            deadline = time.monotonic() + self.config.start_timeout_s
            for name, service in self.services.items():
                self._await_serving(service, _SERVICES[name][2], deadline)
        except BaseException:
            self.stop()
            raise
        return self.targets

    def _await_serving(self, service: LocalService, full_name: str, deadline: float) -> None:
        channel = make_channel(service.target)
        try:
            while not wait_for_serving(channel, full_name, timeout_s=1.0):
                self._check_alive(service)
                if time.monotonic() > deadline:
                    raise StackError(f"{service.name} was not SERVING within "
                                     f"{self.config.start_timeout_s:.0f} s; its log ends:\n"
                                     f"{service.log_tail()}")
        finally:
            channel.close()
        service.find_metrics_port()
        logger.info("%s serving on %s", service.name, service.target)

    @staticmethod
    def _check_alive(service: LocalService) -> None:
        code = service.proc.poll()
        if code is not None:
            raise StackError(f"{service.name} exited with code {code} before serving; "
                             f"its log ends:\n{service.log_tail()}")

    @property
    def targets(self) -> ServiceTargets:
        return ServiceTargets(**{name: s.target for name, s in self.services.items()})

    def stop(self, timeout_s: float | None = None) -> dict[str, int | None]:
        """SIGTERM every service, wait for the drain, kill stragglers; returns exit codes."""
        wait_s = (self.config.grace_s + 10.0) if timeout_s is None else timeout_s
        for service in self.services.values():
            if service.proc.poll() is None:
                service.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        codes: dict[str, int | None] = {}
        for name, service in self.services.items():
            try:
                codes[name] = service.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop after SIGTERM; killing it", name)
                service.proc.kill()
                codes[name] = service.proc.wait()
        self.services.clear()
        if self._own_log_dir is not None:
            self._own_log_dir.cleanup()
            self._own_log_dir = None
        return codes

    def __enter__(self) -> LocalStack:  # noqa: PYI034
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
