"""The three gRPC services as local subprocesses on loopback (for `dynamics render`/`up`, tests).

Each service gets a free loopback port chosen here (whatever its log level) and a metrics port
of 0, and listens on 127.0.0.1 only (gRPC and metrics: `<SVC>_BIND_HOST`). The stack is ready
when every service's health check says SERVING; a service that exits or stays NOT_SERVING past
the timeout fails the start with the tail of its log. `stop()` sends SIGTERM (the services
drain) and kills what is still running after the grace period.

`supervise()` (used by `dynamics up`) watches the running services from a thread: a service
that exits is reaped, logged and started again on the same port after a backoff (1 s, doubling,
at most 30 s), and the stack waits for it to be SERVING again. A service that dies more than
`max_restarts` times within `restart_window_s` is given up on: `failure` holds a `StackError`
naming it (with its exit code and the tail of its log) and the `on_failure` callback runs, so
the owner can shut everything down.

`StackConfig.animators` > 1 starts that many animators (`animator`, `animator-2`, ...), each on
its own port and supervised on its own; the gateway reaches them through one target,
`ipv4:127.0.0.1:P1,127.0.0.1:P2,...`, and spreads Animate calls over them round_robin.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.grpc_client import make_channel, wait_for_serving
from services.common.grpc_server import PARENT_PID_ENV
from services.gateway.pipeline.clients import (
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


# Local services listen on loopback only: nothing outside this machine reaches them.
LOOPBACK = "127.0.0.1"
MAX_BACKOFF_S = 30.0


class StackError(RuntimeError):
    """A local service did not come up, or kept dying."""


def describe_exit(code: int | None) -> str:
    """ "exited with code 1" / "was killed by SIGKILL" for a Popen return code."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(frozen=True)
class StackConfig:
    """How to run the local services. `env` is the environment they get (plus our keys);
    None passes this process's environment on, as any launched program would get it."""

    weights_dir: Path
    env: Mapping[str, str] | None = None
    animator_device: str = "cpu"
    animator_batch_size: int | None = None
    animators: int = 1  # animator processes behind the one animator target
    extra_env: Mapping[str, str] = field(default_factory=dict)
    start_timeout_s: float = 180.0
    grace_s: float = 10.0
    log_dir: Path | None = None
    # supervision (`LocalStack.supervise`): restarts of one service allowed within the window
    max_restarts: int = 3
    restart_window_s: float = 300.0
    restart_backoff_s: float = 1.0  # first delay; doubles per restart within the window


@dataclass
class LocalService:
    """One running service process."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    port: int | None = None
    kind: str = ""  # face_detect, animator or encoder; "" means `name`
    metrics_port: int | None = None
    deaths: list[float] = field(default_factory=list)  # monotonic times, within the window
    restarts: int = 0  # restarts that reached SERVING

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def service_kind(self) -> str:
        return self.kind or self.name

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


class LocalStack:
    """Start/stop face_detect, animator and encoder on loopback. Use as a context manager."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.services: dict[str, LocalService] = {}
        self.failure: StackError | None = None  # set when supervision gave a service up
        self._own_log_dir: tempfile.TemporaryDirectory | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._on_failure: Callable[[StackError], None] | None = None

    def _env(self, prefix: str, port: int) -> dict[str, str]:
        cfg = self.config
        inherited = os.environ if cfg.env is None else cfg.env
        env = {
            **inherited,
            "PYTHONUNBUFFERED": "1",
            f"{prefix}_PORT": str(port),
            f"{prefix}_METRICS_PORT": "0",
            f"{prefix}_GRACE_S": str(cfg.grace_s),
            f"{prefix}_BIND_HOST": LOOPBACK,
            PARENT_PID_ENV: str(os.getpid()),
        }  # the service dies with this process
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
        self._stopping.clear()
        try:
            for kind in _SERVICES:
                count = max(1, self.config.animators) if kind == "animator" else 1
                for index in range(count):
                    name = kind if index == 0 else f"{kind}-{index + 1}"
                    log_path = log_dir / f"{name}.log"
                    log_path.write_bytes(b"")
                    port = free_port()
                    self.services[name] = LocalService(
                        name, self._spawn(kind, port, log_path), log_path, port, kind=kind
                    )
            deadline = time.monotonic() + self.config.start_timeout_s
            for service in self.services.values():
                self._await_serving(service, _SERVICES[service.service_kind][2], deadline)
        except BaseException:
            self.stop()
            raise
        return self.targets

    def _spawn(self, name: str, port: int, log_path: Path) -> subprocess.Popen:
        module, prefix, _full = _SERVICES[name]
        with open(log_path, "ab") as log:  # a restart appends to the same log
            # no preexec_fn: the service sets its own parent-death signal (`die_with_parent`),
            # so Popen need not fork a process that runs gRPC
            return subprocess.Popen(
                [sys.executable, "-m", module],
                env=self._env(prefix, port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def _await_serving(self, service: LocalService, full_name: str, deadline: float) -> None:
        channel = make_channel(service.target)
        try:
            while not wait_for_serving(channel, full_name, timeout_s=1.0):
                if self._stopping.is_set():
                    raise StackError(f"{service.name}: the stack is stopping")
                self._check_alive(service)
                if time.monotonic() > deadline:
                    raise StackError(
                        f"{service.name} was not SERVING within "
                        f"{self.config.start_timeout_s:.0f} s; its log ends:\n"
                        f"{service.log_tail()}"
                    )
        finally:
            channel.close()
        service.find_metrics_port()
        logger.info("%s serving on %s", service.name, service.target)

    @staticmethod
    def _check_alive(service: LocalService) -> None:
        code = service.proc.poll()
        if code is not None:
            raise StackError(
                f"{service.name} {describe_exit(code)} before serving; "
                f"its log ends:\n{service.log_tail()}"
            )

    def supervise(
        self, on_failure: Callable[[StackError], None] | None = None, poll_s: float = 0.5
    ) -> None:
        """Restart services that die (see the module docstring) until `stop()`.

        Call after `start()`. `on_failure` runs on the supervising thread once a service is
        given up on; the other services keep running until `stop()`.
        """
        if self._supervisor is not None:
            raise RuntimeError("already supervising")
        self._on_failure = on_failure
        # This thread starts the restarted services, and their parent-death signal follows the
        # thread that started them: it lives until stop(), which stops those services anyway.
        self._supervisor = threading.Thread(
            target=self._supervise, args=(poll_s,), name="stack-supervisor", daemon=True
        )
        self._supervisor.start()

    def _supervise(self, poll_s: float) -> None:
        while not self._stopping.wait(poll_s):
            for service in list(self.services.values()):
                code = service.proc.poll()  # reaps an exited service
                if code is None or self._stopping.is_set():
                    continue
                try:
                    try:
                        self._revive(service, code)
                    except OSError as exc:  # could not even start the process
                        raise StackError(f"{service.name} could not be restarted: {exc}") from exc
                except StackError as exc:
                    if self._stopping.is_set():
                        return
                    self.failure = exc
                    logger.error("%s", exc)
                    if self._on_failure is not None:
                        self._on_failure(exc)
                    # stay until stop(): services this thread restarted get their parent-death
                    # signal when it ends, and stop() drains them in order instead
                    self._stopping.wait()
                    return

    def _revive(self, service: LocalService, code: int) -> None:
        """Restart `service` on its port until it is SERVING; StackError past the budget."""
        cfg = self.config
        while not self._stopping.is_set():
            now = time.monotonic()
            service.deaths = [t for t in service.deaths if now - t < cfg.restart_window_s]
            service.deaths.append(now)
            if len(service.deaths) > cfg.max_restarts:
                raise StackError(
                    f"{service.name} {describe_exit(code)}; it died {len(service.deaths)} "
                    f"time{'s' if len(service.deaths) != 1 else ''} "
                    f"within {cfg.restart_window_s:.0f} s (at most {cfg.max_restarts} restarts "
                    f"allowed), so it is not restarted again. Its log ends:\n"
                    f"{service.log_tail()}"
                )
            delay = min(cfg.restart_backoff_s * 2 ** (len(service.deaths) - 1), MAX_BACKOFF_S)
            logger.error(
                "%s %s; restarting it on port %d in %.1f s (restart %d of at most %d "
                "within %.0f s)",
                service.name,
                describe_exit(code),
                service.port,
                delay,
                len(service.deaths),
                cfg.max_restarts,
                cfg.restart_window_s,
            )
            if self._stopping.wait(delay):
                return
            service.proc = self._spawn(service.service_kind, service.port, service.log_path)
            deadline = time.monotonic() + cfg.start_timeout_s
            try:
                self._await_serving(service, _SERVICES[service.service_kind][2], deadline)
            except StackError:
                if self._stopping.is_set():
                    return
                if service.proc.poll() is None:  # never became SERVING: counts as a death
                    service.proc.kill()
                    service.proc.wait()
                code = service.proc.returncode
                continue
            service.restarts += 1
            logger.warning(
                "%s restarted and SERVING again on %s (restart %d)",
                service.name,
                service.target,
                service.restarts,
            )
            return

    @property
    def targets(self) -> ServiceTargets:
        """One target per kind; several animators are one `ipv4:` list (round_robin)."""
        by_kind: dict[str, list[str]] = {}
        for service in self.services.values():
            by_kind.setdefault(service.service_kind, []).append(service.target)
        return ServiceTargets(
            **{
                kind: found[0] if len(found) == 1 else "ipv4:" + ",".join(found)
                for kind, found in by_kind.items()
            }
        )

    def stop(self, timeout_s: float | None = None) -> dict[str, int | None]:
        """SIGTERM every service, wait for the drain, kill stragglers; returns exit codes."""
        self._stopping.set()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()  # it notices `_stopping` within a second
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
