"""A fleet on one machine: real processes on loopback, the animators behind ONE DNS name.

- a loopback DNS server (tests/fleet/dns.py) holds `animator.fleet.test`, whose A records are the
  addresses of the animators that are ready, as a headless Service's endpoints are: an animator
  is added once its health says SERVING and removed when it starts draining or dies;
- every animator listens on its own loopback address (127.0.1.N; all of 127/8 is loopback on
  Linux) and the same port, like pods behind a Service port;
- gateways reach them through `dns://127.0.0.1:<dns port>/animator.fleet.test:<port>`, resolved
  by gRPC's c-ares resolver (the resolver of a `dns:///` target) and balanced round_robin;
  servers age connections out, so the gateways re-resolve and find animators that were added;
- gateways share one PostgreSQL database and one data folder (the stand-in for the bucket).
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.common.grpc_client import check_health, make_channel
from tests.fleet.dns import FleetDns
from tests.reliability.conftest import FULL_NAMES, SERVICE_ENVS, healthy
from tests.reliability.fault_stack import GatewayRun
from tests.service_process import ServiceProcess, start_service

ANIMATOR_NAME = "animator.fleet.test"
# Connections age out after this many seconds in the fleet (30 s in production): short, so the
# "added animator gets work" check is quick; calls running on an aged-out connection finish.
FLEET_CONNECTION_AGE_S = "3"
# A draining animator keeps admitting calls this long (connection age + the gateways' 1 s
# minimum between resolutions + margin), so no call is refused while clients move away.
FLEET_DRAIN_DELAY_S = "5"


def shared_port(hosts: list[str]) -> int:
    """A TCP port free on every one of `hosts`."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.1.250", 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket() as sock:
                    sock.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every fleet address")


def counter(metrics: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus counter's samples whose labels include `labels`."""
    total = 0.0
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Animator:
    host: str
    process: ServiceProcess
    last: dict[str, float] = field(default_factory=dict)  # last metrics read (kept after exit)

    def read(self) -> dict[str, float]:
        """Animate calls (OK, started, all handled) and busy seconds, from its /metrics."""
        if self.process.proc.poll() is None:
            url = f"http://{self.host}:{self.process.metrics_port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    text = reply.read().decode()
            except OSError:
                return dict(self.last)
            self.last = {
                "animate_ok": counter(
                    text, "grpc_server_handled_total", grpc_method="Animate", grpc_code="OK"
                ),
                "animate_handled": counter(
                    text, "grpc_server_handled_total", grpc_method="Animate"
                ),
                "animate_started": counter(
                    text, "grpc_server_started_total", grpc_method="Animate"
                ),
                "busy_s": counter(text, "animator_busy_seconds_total"),
                "calls_started": counter(
                    text, "grpc_server_started_total", grpc_service="dynamics.v1.AnimatorService"
                ),
                "calls_handled": counter(
                    text, "grpc_server_handled_total", grpc_service="dynamics.v1.AnimatorService"
                ),
            }
        return dict(self.last)

    def working(self) -> bool:
        """Any AnimatorService call (motion extraction, Animate) in flight."""
        values = self.read()
        return values.get("calls_started", 0.0) > values.get("calls_handled", 0.0)

    def in_flight(self) -> float:
        values = self.read()
        return values.get("animate_started", 0.0) - values.get("animate_handled", 0.0)


@dataclass
class Fleet:
    """Start with `start()`; `stop()` ends every process it started."""

    data_dir: Path
    database_url: str
    gateways_count: int = 2
    animators_count: int = 2
    gateway_workers: int = 3
    dns: FleetDns = field(default_factory=FleetDns)
    animators: dict[str, Animator] = field(default_factory=dict)
    retired: list[Animator] = field(default_factory=list)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    gateways: list[GatewayRun] = field(default_factory=list)
    port: int = 0
    _next: int = 1

    def start(self) -> Fleet:
        self.port = shared_port([f"127.0.1.{n}" for n in range(1, 21)])
        for name in ("face_detect", "encoder"):
            self.services[name] = start_service(name, SERVICE_ENVS[name])
        for _ in range(self.animators_count):
            self.add_animator()
        for name, service in self.services.items():
            self._wait_serving(lambda s=service, n=name: healthy(s, n), name)
        for _ in range(self.gateways_count):
            self.gateways.append(GatewayRun(self.data_dir, self.gateway_env()).start())
        return self

    @property
    def animator_target(self) -> str:
        return self.dns.target(ANIMATOR_NAME, self.port)

    def gateway_env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "FACE_DETECT_ADDR": self.services["face_detect"].target,
            "ANIMATOR_ADDR": self.animator_target,
            "ENCODER_ADDR": self.services["encoder"].target,
            "GATEWAY_WORKERS": str(self.gateway_workers),
            "GRPC_DNS_MIN_RESOLUTION_S": "1",
            "GRPC_MAX_RECONNECT_BACKOFF_S": "2",
            "RESULT_URL_SECRET": "fleet-shared-secret",
            "JOB_POLL_S": "0.1",
            "JOB_LEASE_S": "4",
            "JOB_HEARTBEAT_S": "0.5",
            "JOB_MAX_ATTEMPTS": "6",
            "JOB_RETRY_BASE_S": "0.3",
            "MAX_ACTIVE_JOBS": "1000",
            "RATE_LIMIT_JOBS": "100000",
        }

    @staticmethod
    def _wait_serving(probe, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while probe() != "SERVING":
            assert time.monotonic() < deadline, f"{what} never became SERVING"
            time.sleep(0.1)

    def start_animator(self) -> Animator:
        """Start one more animator on the next loopback address (not yet in DNS)."""
        host = f"127.0.1.{self._next}"
        self._next += 1
        env = {
            **SERVICE_ENVS["animator"],
            "ANIMATOR_PORT": str(self.port),
            "ANIMATOR_BIND_HOST": host,
            "ANIMATOR_GRACE_S": "60",
            "ANIMATOR_MAX_CONNECTION_AGE_S": FLEET_CONNECTION_AGE_S,
            "ANIMATOR_MAX_CONNECTION_AGE_GRACE_S": "120",
            # on SIGTERM keep taking calls until the gateways have re-resolved the name
            "ANIMATOR_DRAIN_DELAY_S": FLEET_DRAIN_DELAY_S,
        }
        animator = Animator(host, start_service("animator", env))
        return animator

    def wait_ready_and_publish(self, animator: Animator) -> None:
        """Wait for SERVING, then add its address to the name (the endpoints controller's job)."""

        def probe() -> str:
            channel = make_channel(f"{animator.host}:{self.port}")
            try:
                return check_health(channel, FULL_NAMES["animator"], timeout_s=5.0)
            finally:
                channel.close()

        self._wait_serving(probe, f"animator {animator.host}")
        self.animators[animator.host] = animator
        animator.read()
        self._publish()

    def add_animator(self) -> Animator:
        animator = self.start_animator()
        self.wait_ready_and_publish(animator)
        return animator

    def _publish(self) -> None:
        self.dns.set(ANIMATOR_NAME, sorted(self.animators))

    def drain_animator(self, host: str) -> Animator:
        """Take it out of the name, then SIGTERM it (what a pod deletion does); returns at once."""
        animator = self.animators.pop(host)
        self._publish()
        animator.read()
        animator.process.proc.send_signal(signal.SIGTERM)
        self.retired.append(animator)
        return animator

    def kill_animator(self, host: str) -> Animator:
        """SIGKILL it, then take it out of the name (a node lost)."""
        animator = self.animators.pop(host)
        animator.read()
        animator.process.proc.send_signal(signal.SIGKILL)
        animator.process.proc.wait(10)
        self._publish()
        self.retired.append(animator)
        return animator

    def every_animator(self) -> list[Animator]:
        return [*self.animators.values(), *self.retired]

    def animate_ok(self) -> dict[str, float]:
        return {a.host: a.read().get("animate_ok", 0.0) for a in self.every_animator()}

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop(timeout=60)
        for animator in self.every_animator():
            with contextlib.suppress(subprocess.TimeoutExpired):  # a stuck one is killed next
                animator.process.terminate(60)
            animator.process.kill()
        for service in self.services.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.terminate(30)
            service.kill()
        self.dns.close()


def job_views(fleet: Fleet, job_ids: list[str]) -> dict[str, dict]:
    """Every job's view, read through the gateways in turn (any replica answers for any job)."""
    return {job: fleet.gateways[i % len(fleet.gateways)].view(job) for i, job in enumerate(job_ids)}


def wait_all_final(fleet: Fleet, job_ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        views = job_views(fleet, job_ids)
        if all(v["status"] in ("succeeded", "failed", "cancelled") for v in views.values()):
            return views
        pending = {
            j: v["status"]
            for j, v in views.items()
            if v["status"] not in ("succeeded", "failed", "cancelled")
        }
        assert time.monotonic() < deadline, f"jobs not final after {timeout} s: {pending}"
        time.sleep(0.2)


def succeeded_total(fleet: Fleet) -> float:
    total = 0.0
    for gateway in fleet.gateways:
        match = re.search(r'dynamics_jobs_total\{status="succeeded"\} (\S+)', gateway.metrics())
        total += float(match.group(1)) if match else 0.0
    return total
