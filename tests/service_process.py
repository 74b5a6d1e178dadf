"""Start a Dynamics service as a real subprocess on loopback and learn its ports from its logs.

Services log one JSON object per line; `GrpcService.start()` logs "<name> listening" with the
bound `port` and `metrics_port`, so tests can ask for port 0 and still find the service.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServiceProcess:
    """A running `python -m services.<module>` with its log lines collected."""

    module: str
    proc: subprocess.Popen
    port: int
    metrics_port: int | None
    lines: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return r.read().decode()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_service(
    module: str, env: dict[str, str], *, timeout: float = 120.0, known_port: int | None = None
) -> ServiceProcess:
    """Start `python -m services.<module>` and wait for its "listening" log line.

    With `known_port` (an HTTP service told its port), return at once; the caller polls it.
    """
    full_env = {**os.environ, "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{module}"],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    found: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and str(entry.get("message", "")).endswith(" listening"):
                found.put((int(entry["port"]), entry.get("metrics_port")))

    threading.Thread(target=pump, daemon=True).start()
    if known_port is not None:
        return ServiceProcess(module, proc, known_port, None, lines)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            port, metrics_port = found.get(timeout=0.2)
            return ServiceProcess(module, proc, port, metrics_port, lines)
        except queue.Empty:
            if proc.poll() is not None:
                break
    proc.kill()
    tail = "\n".join(lines[-30:])
    raise RuntimeError(f"services.{module} did not start (exit {proc.poll()}):\n{tail}")
