"""Hub fetch: download + verification against a loopback stand-in for the hub, fast clear
failure without network, and the manifest deciding provenance "real".

The real Hugging Face hub cannot be reached from the test machines, so `fake_hub` serves the
hub's HTTP API (model info with LFS metadata, HEAD/GET on resolve URLs) on 127.0.0.1; the real
huggingface_hub client talks to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.animator.checkpoint_format import MANIFEST_FILE, RANDOM_MARKER, WeightsError
from services.animator.hub import (
    HUB_FILES,
    RemoteFile,
    WeightsFetchError,
    fetch_weights,
    file_sha256,
    write_manifest,
)
from services.animator.model import default_config_path, named_config_path
from services.animator.random_weights import write_random_weights
from services.animator.weights import load_models

REPO = "KwaiVGI/LivePortrait"
COMMIT = "c0ffee" * 6 + "c0ff"


class _HubHandler(BaseHTTPRequestHandler):
    """The three hub requests fetch_weights makes, for the files in `server.blobs`."""

    def log_message(self, *args) -> None:
        pass

    def _blob(self) -> bytes | None:
        prefix = f"/{REPO}/resolve/{COMMIT}/"
        name = self.path[len(prefix) :] if self.path.startswith(prefix) else None
        return self.server.served.get(name)

    def _send(self, body: bytes, content_type: str, head: bool = False) -> None:
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        blob = self._blob()
        if blob is None:
            self.send_error(404)
        else:
            self._send(blob, "application/octet-stream", head=True)

    def do_GET(self) -> None:
        if self.path.startswith(f"/api/models/{REPO}/revision/"):
            siblings = [
                {
                    "rfilename": name,
                    "size": len(data),
                    "lfs": {
                        "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "pointerSize": 134,
                    },
                }
                for name, data in self.server.blobs.items()
            ]
            body = json.dumps({"id": REPO, "sha": COMMIT, "siblings": siblings}).encode()
            self._send(body, "application/json")
            return
        blob = self._blob()
        if blob is None:
            self.send_error(404)
            return
        self.server.downloads.append(self.path)
        self._send(blob, "application/octet-stream")


@pytest.fixture()
def fake_hub(tmp_path):
    """(endpoint, server): server.blobs = hub metadata source, server.served = what GET returns."""
    src = write_random_weights(tmp_path / "hub-src", "reduced", seed=11)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    server.blobs = {name: (src / name).read_bytes() for name in HUB_FILES}
    server.served = dict(server.blobs)
    server.downloads = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()
    thread.join()


def test_fetch_downloads_verifies_and_writes_manifest(fake_hub, tmp_path):
    endpoint, server = fake_hub
    dest = tmp_path / "weights"
    manifest_path = fetch_weights(dest, endpoint=endpoint)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["commit"] == COMMIT and manifest["revision"] == "main"
    assert (
        manifest["files"][HUB_FILES[1]]["sha256"]
        == hashlib.sha256(server.blobs[HUB_FILES[1]]).hexdigest()
    )
    assert len(server.downloads) == len(HUB_FILES)
    assert (dest / "models.yaml").read_text() == default_config_path().read_text()
    models = load_models(dest, config=named_config_path("reduced"))
    assert models.provenance == "real" and models.layout == "tree"
    fetch_weights(dest, endpoint=endpoint)  # everything present and verified: no download
    assert len(server.downloads) == len(HUB_FILES)


def test_fetch_rejects_content_not_matching_lfs_sha256(fake_hub, tmp_path):
    endpoint, server = fake_hub
    name = HUB_FILES[2]
    tampered = bytearray(server.blobs[name])
    tampered[len(tampered) // 2] ^= 0xFF  # same size, one byte flipped
    server.served[name] = bytes(tampered)
    with pytest.raises(
        WeightsFetchError, match="warping_module.pth: downloaded file does not match the hub's size"
    ):
        fetch_weights(tmp_path / "weights", endpoint=endpoint)
    assert not (tmp_path / "weights" / name).exists()
    assert not (tmp_path / "weights" / MANIFEST_FILE).exists()


def test_fetch_reports_a_file_missing_on_the_hub(fake_hub, tmp_path):
    endpoint, server = fake_hub
    del server.blobs[HUB_FILES[4]]
    with pytest.raises(WeightsFetchError, match="has no file liveportrait/retargeting_models/"):
        fetch_weights(tmp_path / "weights", endpoint=endpoint)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_fails_fast_with_one_line(tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(WeightsFetchError) as info:
        fetch_weights(tmp_path / "w", endpoint=endpoint)
    assert time.monotonic() - start < 10
    message = info.value.message
    assert "\n" not in message
    assert message.startswith(f"cannot list KwaiVGI/LivePortrait@main on {endpoint}")
    assert info.value.reason == "weights_fetch_failed"
    assert not (tmp_path / "w").exists()


def test_cli_fetch_offline_mode(tmp_path, repo_root):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "services.animator.weights_cli", "fetch", str(tmp_path / "w")],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot list KwaiVGI/LivePortrait")
    assert "offline" in lines[0]


@pytest.fixture()
def manifest_dir(tmp_path) -> Path:
    """Reduced random weights re-labelled as fetched: marker removed, manifest written."""
    folder = write_random_weights(tmp_path / "w", "reduced", seed=3)
    (folder / RANDOM_MARKER).unlink()
    files = [RemoteFile(p, (folder / p).stat().st_size, file_sha256(folder / p)) for p in HUB_FILES]
    write_manifest(folder, files, repo_id="KwaiVGI/LivePortrait", revision="main", commit="0" * 40)
    return folder


def test_manifest_makes_provenance_real(manifest_dir):
    assert load_models(manifest_dir).provenance == "real"
    manifest = json.loads((manifest_dir / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == set(HUB_FILES) and manifest["commit"] == "0" * 40


def test_file_not_matching_manifest_is_rejected(manifest_dir):
    target = manifest_dir / HUB_FILES[0]
    other = write_random_weights(manifest_dir.parent / "other", "reduced", seed=4)
    shutil.copy(other / HUB_FILES[0], target)  # same size, different content
    with pytest.raises(WeightsError, match="appearance_feature_extractor.pth: size/sha256 differ"):
        load_models(manifest_dir)


def test_random_weights_never_overwrite_fetched_ones(manifest_dir):
    with pytest.raises(WeightsError, match="holds fetched real weights"):
        write_random_weights(manifest_dir, "reduced", seed=1, overwrite=True)
