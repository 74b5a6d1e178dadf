"""The container build files: digest-pinned bases, non-root users, locked requirements that
satisfy pyproject.toml, and entrypoints that the package really installs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
# Keys avoid the word "gpu": the root conftest skips `gpu` keywords without CUDA.
DOCKERFILES = {
    "cpu": REPO_ROOT / "docker" / "Dockerfile.cpu",
    "cuda": REPO_ROOT / "docker" / "Dockerfile.gpu",
}
LOCK_DIR = REPO_ROOT / "requirements"
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _locked(name: str) -> dict[str, str]:
    pins = {}
    for line in (LOCK_DIR / name).read_text().splitlines():
        if line and not line.startswith("#"):
            pkg, _, version = line.partition("==")
            assert version, f"{name}: {line!r} is not pinned with =="
            pins[canonicalize_name(pkg)] = version
    return pins


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_bases_are_pinned_by_digest(kind: str) -> None:
    steps = _instructions(DOCKERFILES[kind])
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    bases = [a.split()[0] for w, a in steps if w == "FROM"]
    assert len(bases) >= 2  # a build stage and a slim runtime stage
    for base in bases:
        resolved = args.get(base.strip("${}"), base)
        assert DIGEST.search(resolved), f"{kind}: base {resolved} is not pinned by digest"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_runtime_stage_is_non_root_without_weights(kind: str) -> None:
    steps = _instructions(DOCKERFILES[kind])
    last_from = max(i for i, (w, _) in enumerate(steps) if w == "FROM")
    runtime = steps[last_from:]
    users = [a for w, a in runtime if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    copies = " ".join(a for w, a in steps if w in ("COPY", "ADD"))
    assert "weights" not in copies and ".pth" not in copies and ".dynamics" not in copies
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "HOME=/tmp" in env  # writable home on the emptyDir; the root filesystem is read-only
    (cmd,) = [a for w, a in runtime if w == "CMD"]
    assert cmd.strip('[]"') in PROJECT["scripts"]


@pytest.mark.parametrize("extra", sorted(set(PROJECT["optional-dependencies"]) - {"dev"}))
def test_lock_files_satisfy_pyproject(extra: str) -> None:
    pins = _locked(f"{extra}.txt")
    for raw in PROJECT["dependencies"] + PROJECT["optional-dependencies"][extra]:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pins, f"{extra}.txt lacks {req.name}"
        version = pins[name].split("+", 1)[0]
        assert req.specifier.contains(version, prereleases=True), f"{extra}: {name}=={version}"
        for sub in req.extras:  # e.g. psycopg[binary] -> psycopg-binary
            assert canonicalize_name(f"{req.name}-{sub}") in pins, f"{extra}: {req.name}[{sub}]"


def test_images_install_every_lock_they_need() -> None:
    cpu = DOCKERFILES["cpu"].read_text()
    for lock in ("face-detect.txt", "encoder.txt", "gateway.txt", "no-deps.txt"):
        assert f"requirements/{lock}" in cpu, lock
    assert "==2.13.0\n" in (LOCK_DIR / "animator.txt").read_text()  # CUDA build, no +cpu tag
    # the CUDA image installs only hash-locked files, without dependency resolution
    installs = [a for w, a in _instructions(DOCKERFILES["cuda"]) if w == "RUN" and "pip" in a]
    text = " ".join(installs)
    for lock in ("animator-gpu-build.txt", "animator-gpu.txt"):
        assert f"--require-hashes --no-deps -r /src/requirements/{lock}" in " ".join(
            text.replace("--no-build-isolation ", "").split()
        ), lock
    assert "requirements/animator.txt" not in text
