"""`python -m services.face_detect.detect_cli IMAGE --json` as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.unit.common.unreadable import unprivileged_prefix
from tests.unit.face_detect import assets


def _run(
    *args: str, env: dict | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FACE_DETECT_")}
    full_env.update(env or {})
    return subprocess.run(
        [*prefix, sys.executable, "-m", "services.face_detect.detect_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        check=False,
    )


def test_json_on_group_photo():
    result = _run(str(assets.insightface_image_path("t1.jpg")), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["backend"] == "mtcnn" and (doc["width"], doc["height"]) == (1280, 886)
    faces = doc["faces"]
    assert len(faces) == 6
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        assert 0 < face["score"] <= 1 and len(face["landmarks"]) == 5
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])


def test_human_output_and_single_face(tmp_path):
    result = _run(str(assets.insightface_image_path("Tom_Hanks_54745.png")))
    assert result.returncode == 0, result.stderr
    assert "1 face(s) [mtcnn]" in result.stdout


def test_corrupt_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    result = _run(str(bad), "--json")
    assert result.returncode == 2
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing.png", "no such file or folder"),
        ("folder", "is a folder, not a file"),
        ("locked.png", "permission denied"),
    ],
)
def test_unusable_image_file_is_one_line_and_exit_2(tmp_path, name: str, reason: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "locked.png").write_bytes(assets.insightface_image_path("t1.jpg").read_bytes())
    (tmp_path / "locked.png").chmod(0)
    result = _run(str(tmp_path / name), prefix=tuple(unprivileged_prefix()))
    assert result.returncode == 2
    assert result.stderr == f"dynamics detect: {tmp_path / name}: {reason}\n"


def test_insightface_backend_needs_models(tmp_path, onnx_dir):
    image = str(assets.insightface_image_path("Tom_Hanks_54745.png"))
    missing = _run(image, "--backend", "insightface", "--model-dir", str(tmp_path))
    assert missing.returncode == 3 and "det_10g.onnx" in missing.stderr
    ok = _run(
        image, "--backend", "insightface", "--json", env={"FACE_DETECT_MODEL_DIR": str(onnx_dir)}
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["backend"] == "insightface"
