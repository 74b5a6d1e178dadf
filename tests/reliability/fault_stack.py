"""A stack for fault tests: the services on fixed loopback ports (so a killed one can be
restarted where the gateway expects it), optionally two animator replicas, and real gateway
processes submitting real jobs over HTTP."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.reliability.conftest import FULL_NAMES, SERVICE_ENVS, free_port, healthy, start_gateway
from tests.service_process import ServiceProcess, start_service

FINAL = ("succeeded", "failed", "cancelled")
PREFIX = {"face_detect": "FACE_DETECT", "animator": "ANIMATOR", "encoder": "ENCODER"}


@dataclass
class FaultStack:
    """Services by name; each name has one or more replicas on fixed ports."""

    replicas: dict[str, int] = field(
        default_factory=lambda: {"face_detect": 1, "animator": 1, "encoder": 1}
    )
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    ports: dict[str, list[int]] = field(default_factory=dict)
    procs: dict[str, list[ServiceProcess | None]] = field(default_factory=dict)
    restarts: int = 0

    def start(self) -> FaultStack:
        for name, count in self.replicas.items():
            self.ports[name] = [free_port() for _ in range(count)]
            self.procs[name] = [None] * count
            for index in range(count):
                self.restart(name, index, count_it=False)
        return self

    def env(self, name: str, index: int) -> dict[str, str]:
        return {
            **SERVICE_ENVS[name],
            f"{PREFIX[name]}_PORT": str(self.ports[name][index]),
            f"{PREFIX[name]}_GRACE_S": "5",
            **self.extra_env.get(name, {}),
        }

    def restart(self, name: str, index: int = 0, *, count_it: bool = True) -> ServiceProcess:
        """(Re)start replica `index` of `name` on its port and wait until it is SERVING."""
        service = start_service(name, self.env(name, index))
        deadline = time.monotonic() + 90
        while healthy(service, name) != "SERVING":
            assert time.monotonic() < deadline, f"{name} never became SERVING"
            time.sleep(0.1)
        self.procs[name][index] = service
        self.restarts += int(count_it)
        return service

    def kill(self, name: str, index: int = 0) -> None:
        service = self.procs[name][index]
        assert service is not None and service.proc.poll() is None
        os.kill(service.proc.pid, signal.SIGKILL)
        service.proc.wait(10)

    def target(self, name: str) -> str:
        ports = self.ports[name]
        if len(ports) == 1:
            return f"127.0.0.1:{ports[0]}"
        return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)

    def gateway_env(self) -> dict[str, str]:
        return {f"{PREFIX[name]}_ADDR": self.target(name) for name in self.replicas}

    def alive(self) -> dict[str, list[str]]:
        return {
            name: [healthy(p, name) if p and p.proc.poll() is None else "DEAD" for p in procs]
            for name, procs in self.procs.items()
        }

    def stop(self) -> dict[str, list[int | None]]:
        codes: dict[str, list[int | None]] = {}
        for name, procs in self.procs.items():
            for service in procs:
                if service is None:
                    continue
                try:
                    code = service.terminate(30)
                except Exception:  # noqa: BLE001 - a stuck service is killed and reported
                    code = None
                service.kill()
                codes.setdefault(name, []).append(code)
        return codes


@dataclass
class GatewayRun:
    """A real gateway process and an HTTP client for it."""

    data_dir: Path
    env: dict[str, str]
    process: ServiceProcess | None = None
    client: httpx.Client | None = None

    def start(self) -> GatewayRun:
        self.process, base = start_gateway(self.data_dir, self.env)
        self.client = httpx.Client(base_url=base, timeout=30)
        return self

    def submit(self, photo: bytes, hero: bytes, **fields: str) -> str:
        files = {
            "source": ("me.png", photo, "image/png"),
            "driving": ("hero.mp4", hero, "video/mp4"),
        }
        response = self.client.post("/v1/jobs", files=files, data=fields)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /readyz is 200: the gateway reaches its database and result storage."""
        deadline = time.monotonic() + timeout
        while self.client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the gateway never became ready"
            time.sleep(0.1)

    def view(self, job_id: str) -> dict:
        return self.client.get(f"/v1/jobs/{job_id}").json()

    def wait_until(self, job_id: str, predicate, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            view = self.view(job_id)
            if predicate(view):
                return view
            assert time.monotonic() < deadline, f"job {job_id} stuck: {view}"
            time.sleep(0.05)

    def wait_final(self, job_id: str, timeout: float = 120.0) -> dict:
        return self.wait_until(job_id, lambda v: v["status"] in FINAL, timeout)

    def metrics(self) -> str:
        return self.client.get("/metrics").text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.client is not None:
            self.client.close()
        if self.process is None:
            return None
        if self.process.proc.poll() is None:
            self.process.proc.send_signal(sig)
        try:
            return self.process.proc.wait(timeout)
        finally:
            self.process.kill()


def gateway_env(stack: FaultStack, **overrides: str) -> dict[str, str]:
    """Fast-retrying gateway settings for fault runs."""
    return {
        **stack.gateway_env(),
        "GATEWAY_WORKERS": "1",
        "JOB_POLL_S": "0.1",
        "JOB_LEASE_S": "3",
        "JOB_HEARTBEAT_S": "0.5",
        "JOB_MAX_ATTEMPTS": "6",
        "JOB_RETRY_BASE_S": "0.5",
        "MAX_ACTIVE_JOBS": "1000",
        "RATE_LIMIT_JOBS": "100000",
        **overrides,
    }


__all__ = ["FULL_NAMES", "FaultStack", "GatewayRun", "gateway_env"]
