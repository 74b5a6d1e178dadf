"""Hub fetch fails fast and clearly without network; the manifest decides provenance "real"."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.animator.checkpoint_format import MANIFEST_FILE, RANDOM_MARKER, WeightsError
from services.animator.hub import (
    HUB_FILES, RemoteFile, WeightsFetchError, fetch_weights, file_sha256, write_manifest)
from services.animator.random_weights import write_random_weights
from services.animator.weights import load_models


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
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot list KwaiVGI/LivePortrait")
    assert "offline" in lines[0]


@pytest.fixture()
def manifest_dir(tmp_path) -> Path:
    """Reduced random weights re-labelled as fetched: marker removed, manifest written."""
    folder = write_random_weights(tmp_path / "w", "reduced", seed=3)
    (folder / RANDOM_MARKER).unlink()
    files = [RemoteFile(p, (folder / p).stat().st_size, file_sha256(folder / p))
             for p in HUB_FILES]
    write_manifest(folder, files, repo_id="KwaiVGI/LivePortrait", revision="main",
                   commit="0" * 40)
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
