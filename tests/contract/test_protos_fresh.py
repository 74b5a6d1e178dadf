"""The committed stubs are exactly what protos/generate.sh makes from the .proto files."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parents[2] / "protos"


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    work = tmp_path / "protos"
    shutil.copytree(PROTO_DIR, work, ignore=shutil.ignore_patterns("*_pb2*.py*", "__pycache__"))
    env_path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    subprocess.run(["bash", str(work / "generate.sh")], check=True, env={"PATH": env_path})
    committed = sorted((PROTO_DIR / "dynamics" / "v1").glob("*_pb2*.py*"))
    fresh = sorted((work / "dynamics" / "v1").glob("*_pb2*.py*"))
    assert [p.name for p in committed] == [p.name for p in fresh], "stub file set differs"
    stale = [p.name for p, q in zip(committed, fresh) if not filecmp.cmp(p, q, shallow=False)]
    assert not stale, f"stale stubs (run protos/generate.sh): {stale}"


def test_every_service_has_its_own_proto() -> None:
    names = {p.stem for p in (PROTO_DIR / "dynamics" / "v1").glob("*.proto")}
    assert names == {"common", "face_detect", "animator", "encoder"}
    for proto in (PROTO_DIR / "dynamics" / "v1").glob("*.proto"):
        assert "package dynamics.v1;" in proto.read_text()
