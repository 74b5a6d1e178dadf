"""Pieces of the loopback stack the observability tests run: free ports, demo media, the
gateway's readiness wait, and `RunningStack.run_job` (one small job through the REST API)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixture_set import DEFAULT_SET
from tests.service_process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_WEIGHTS = DEFAULT_SET.checkpoints  # the services run on the default fixture set
JOB_TIMEOUT_S = 300.0


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningStack:
    """Where the running services answer, and how to push a job through them."""

    metrics_urls: dict[str, str]
    gateway_url: str
    media_dir: Path

    def run_job(self, seconds: float = 1.0) -> dict[str, Any]:
        """Upload the demo photo + hero clip, wait for the job to finish, return its view."""
        import httpx

        files = {
            "source": ("source.png", (self.media_dir / "source.png").read_bytes(), "image/png"),
            "driving": ("hero.mp4", (self.media_dir / "hero.mp4").read_bytes(), "video/mp4"),
        }
        with httpx.Client(base_url=self.gateway_url, timeout=60) as client:
            created = client.post("/v1/jobs", files=files, data={"seconds": str(seconds)})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while time.monotonic() < deadline:
                view = client.get(f"/v1/jobs/{job_id}").json()
                if view["status"] in ("succeeded", "failed", "cancelled"):
                    assert view["status"] == "succeeded", view
                    return view
                time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not finish within {JOB_TIMEOUT_S:.0f} s")


def demo_media(out_dir: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.demo_media",
            str(out_dir),
            "--seconds",
            "1.2",
            "--fps",
            "10",
            "--size",
            "192",
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out_dir


def wait_ready(url: str, gateway: ServiceProcess, timeout_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise RuntimeError("gateway exited:\n" + "\n".join(gateway.lines[-30:]))
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("gateway not ready:\n" + "\n".join(gateway.lines[-30:]))
