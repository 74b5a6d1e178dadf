"""docker/lock_cuda.py against a real loopback package index, and the committed CUDA lock.

The index is an http.server on 127.0.0.1 that speaks the PEP 691 JSON simple API and serves
files with byte ranges, so the tool's range reads of wheels, its sdist reads, its closure and
its checks of what the wheels link run for real, on wheels and sdists built here. Names avoid
the word "gpu": the root conftest skips `gpu` keywords without CUDA.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import re
import struct
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK_DIR = REPO_ROOT / "requirements"


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "lock_cuda", REPO_ROOT / "docker" / "lock_cuda.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["lock_cuda"] = module  # dataclasses look their module up while executing
    spec.loader.exec_module(module)
    return module


lc = _load_tool()

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
# Wheel tags, classified by hand (not with the tool's own tag set): CPython 3.11, manylinux
# x86_64, glibc 2.36 or older can install the first set and none of the second.
TARGET_TAGS = {
    "cp311-cp311-manylinux_2_28_x86_64",
    "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
    "cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64",
    "cp311-none-manylinux_2_28_x86_64",
    "py3-none-manylinux_2_27_x86_64",
    "py3-none-any",
}
OTHER_TAGS = {
    "cp311-cp311-win_amd64",
    "cp311-cp311-manylinux_2_28_aarch64",
    "cp312-cp312-manylinux_2_28_x86_64",
    "cp311-cp311-manylinux_2_39_x86_64",  # glibc newer than Debian 12's
    "cp311-cp311-musllinux_1_2_x86_64",
    "cp310-none-manylinux_2_28_x86_64",
    "cp311-none-macosx_11_0_arm64",
    "py3-none-win_amd64",
}
MIB = 1 << 20


# ----------------------------------------------------------------------------- index


@dataclass
class World:
    """What the loopback index serves, and which files of each release the target takes."""

    base: str = ""
    pages: dict[str, list[dict]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    target: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    ignore_range: bool = False
    log: list[tuple[str, str | None, int]] = field(default_factory=list)  # path, Range, bytes

    @property
    def index_url(self) -> str:
        return f"{self.base}/simple/"

    def served(self, suffix: str) -> int:
        return sum(n for path, _, n in self.log if path.endswith(suffix))

    def add(self, project: str, version: str, filename: str, data: bytes, target: bool, **keys):
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[filename] = data
        entry = {
            "filename": filename,
            "url": f"{self.base}/files/{filename}",
            "hashes": {"sha256": sha},
            "size": len(data),
            **keys,
        }
        self.pages.setdefault(canonicalize_name(project), []).append(entry)
        if target:
            self.target.setdefault((canonicalize_name(project), version), set()).add(sha)
        return entry

    def wheel(
        self,
        name: str,
        version: str,
        tags=("py3-none-any",),
        requires=(),
        members: dict[str, tuple[bytes, int]] | None = None,
        compression: int = zipfile.ZIP_DEFLATED,
        core_metadata: bool = False,
        yanked: str | None = None,
    ) -> None:
        stem = f"{name.replace('-', '_')}-{version}"
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
        metadata += "\nA long description that is not a header.\nRequires-Dist: not-a-dep\n"
        for tag in tags:
            assert tag in TARGET_TAGS | OTHER_TAGS, tag
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                for member, (data, method) in (members or {}).items():
                    zf.writestr(member, data, compress_type=method)
                zf.writestr(f"{stem}.dist-info/METADATA", metadata, compress_type=compression)
                zf.writestr(f"{stem}.dist-info/WHEEL", f"Wheel-Version: 1.0\nTag: {tag}\n")
                zf.writestr(f"{stem}.dist-info/RECORD", "")
            filename = f"{stem}-{tag}.whl"
            keys = {"yanked": yanked} if yanked else {}
            if core_metadata:
                self.blobs[f"{filename}.metadata"] = metadata.encode()
                keys["core-metadata"] = {"sha256": hashlib.sha256(metadata.encode()).hexdigest()}
            self.add(name, version, filename, buf.getvalue(), tag in TARGET_TAGS, **keys)

    def sdist(
        self,
        name: str,
        version: str,
        requires=(),
        build_requires=(),
        pkg_info: bool = True,
        target: bool = True,
    ) -> None:
        top = f"{name.replace('-', '_')}-{version}"
        files = {
            f"{top}/pyproject.toml": (
                f"[build-system]\nrequires = {json.dumps(list(build_requires))}\n"
                f'[project]\nname = "{name}"\nversion = "{version}"\n'
                f"dependencies = {json.dumps(list(requires))}\n"
            ),
            f"{top}/src/{top}/PKG-INFO": "Requires-Dist: nested-file-is-not-metadata\n",
        }
        if pkg_info:
            files[f"{top}/PKG-INFO"] = (
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                + "".join(f"Requires-Dist: {r}\n" for r in requires)
            )
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for path, text in files.items():
                info = tarfile.TarInfo(path)
                info.size = len(text.encode())
                tar.addfile(info, io.BytesIO(text.encode()))
        self.add(name, version, f"{top}.tar.gz", buf.getvalue(), target)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        world: World = self.server.world
        path = urlsplit(self.path).path
        if path.startswith("/simple/"):
            name = path.removeprefix("/simple/").strip("/")
            if JSON_TYPE not in self.headers.get("Accept", ""):
                return self._reply(406, b"only PEP 691 JSON here", "text/plain")
            if name != canonicalize_name(name) or name not in world.pages:
                return self._reply(404, b"no such project", "text/plain")
            page = {"meta": {"api-version": "1.1"}, "name": name, "files": world.pages[name]}
            return self._reply(200, json.dumps(page).encode(), JSON_TYPE)
        body = world.blobs.get(path.removeprefix("/files/"))
        if not path.startswith("/files/") or body is None:
            return self._reply(404, b"no such file", "text/plain")
        spec = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", spec or "")
        if match is None or world.ignore_range:
            world.log.append((path, spec, len(body)))
            return self._reply(200, body, "application/octet-stream")
        start, end = int(match[1]), min(int(match[2]), len(body) - 1)
        if start > end:
            return self._reply(416, b"", "text/plain")
        world.log.append((path, spec, end - start + 1))
        extra = {"Content-Range": f"bytes {start}-{end}/{len(body)}"}
        return self._reply(206, body[start : end + 1], "application/octet-stream", extra)

    def _reply(self, code: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def world(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.world = World(base=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.world
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ----------------------------------------------------------------------- the world

CPU_LOCK = """\
# Lock for the `animator` extra: a stand-in for requirements/animator.txt.
filelock==4.3.1
numpy==2.4.6
onnxruntime==1.32.0
packaging==26.4
setuptools==84.2.1
torch==2.13.0+cpu
"""
STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED


def _elf(*sonames: str, late: str | None = None) -> bytes:
    """Bytes of a fake shared library naming `sonames` in its head, and `late` past 1 MiB."""
    head = b"\x7fELF\x02\x01\x01" + b"\0" * 57 + b"\0".join(s.encode() for s in sonames) + b"\0"
    tail = b"\0" * (MIB + 4096) + late.encode() + b"\0" if late else b"\0" * 256
    return head + b"GLIBC_2.17\0" + tail


def build_world(
    w: World,
    *,
    cuda_provider_cudart: str = "libcudart.so.13",
    bindings_nvinfer: str = "libnvinfer.so.10",
) -> None:
    w.wheel("filelock", "4.3.1", compression=STORED)
    w.wheel("filelock", "4.4.0")
    numpy_tags = ("cp311-cp311-manylinux_2_28_x86_64",)
    numpy_tags += ("cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",)
    numpy_tags += tuple(sorted(OTHER_TAGS - {"py3-none-win_amd64", "cp311-none-macosx_11_0_arm64"}))
    w.wheel("numpy", "2.4.6", tags=numpy_tags)
    w.sdist("numpy", "2.4.6", build_requires=["meson-python"], target=False)  # wheels win
    w.wheel("numpy", "2.5.0", tags=("cp311-cp311-manylinux_2_28_x86_64",))
    w.wheel(
        "onnxruntime", "1.32.0", tags=("cp311-cp311-manylinux_2_28_x86_64",), requires=["numpy"]
    )
    w.wheel("packaging", "26.4")
    w.wheel("setuptools", "84.2.1")
    w.wheel("setuptools", "85.0.0")
    w.wheel(
        "torch",
        "2.13.0",
        tags=("cp311-cp311-manylinux_2_28_x86_64", "cp311-none-macosx_11_0_arm64"),
        requires=[
            "filelock",
            "numpy>=1.22",
            "sympy>=1.13.3",
            'cuda-toolkit[cublas]==13.0.3.0; platform_system == "Linux"',
            'pywin32-ctypes>=0.2; sys_platform == "win32"',
            'opt-einsum>=3.3; extra == "opt-einsum"',
        ],
        core_metadata=True,
    )
    w.wheel("sympy", "1.13.3", requires=["mpmath<1.4,>=1.1.0"])
    w.wheel("sympy", "1.14.0", requires=["mpmath<1.4,>=1.1.0"])
    w.wheel("sympy", "1.15.0rc1", requires=["mpmath<1.4,>=1.1.0"])
    w.wheel("sympy", "1.16.0", requires=["mpmath<1.4,>=1.1.0"], yanked="broken")
    w.wheel("mpmath", "1.3.0", compression=STORED)
    w.wheel("mpmath", "1.4.0")
    w.wheel("pywin32-ctypes", "0.2.3")
    w.wheel("opt-einsum", "3.4.0")
    w.wheel("coloredlogs", "15.0.1")
    w.wheel(
        "cuda-toolkit",
        "13.0.3.0",
        requires=[
            'nvidia-cublas==13.1.1.*; extra == "cublas"',
            'nvidia-curand==10.4.*; extra == "curand"',
            'nvidia-cufft==12.0.*; extra == "cufft"',
        ],
    )
    cuda_wheel = ("py3-none-manylinux_2_27_x86_64", "py3-none-win_amd64")
    w.wheel("nvidia-cublas", "13.1.1.3", tags=cuda_wheel)
    w.wheel("nvidia-cublas", "13.2.0.1", tags=cuda_wheel)
    w.wheel("nvidia-curand", "10.4.0.35", tags=cuda_wheel)
    w.wheel("nvidia-cufft", "12.0.0.61", tags=cuda_wheel)
    for version in ("13.0.88", "13.0.96", "13.5.0"):
        w.wheel("nvidia-cuda-runtime", version, tags=cuda_wheel)
    w.wheel("nvidia-cudnn-cu13", "9.20.0.48", tags=cuda_wheel, requires=["nvidia-cublas"])
    w.wheel("nvidia-cudnn-cu13", "10.0.0.1", tags=cuda_wheel, requires=["nvidia-cublas"])
    capi = "onnxruntime/capi/libonnxruntime_providers_"
    w.wheel(
        "onnxruntime-gpu",
        "1.31.1",
        tags=(
            "cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64",
            "cp311-cp311-win_amd64",
            "cp312-cp312-manylinux_2_28_x86_64",
        ),
        requires=[
            "numpy>=1.21.6",
            'nvidia-cuda-runtime~=13.0; extra == "cuda"',
            'nvidia-cudnn-cu13~=9.0; extra == "cudnn"',
            'cuda-toolkit[curand]==13.0.3.0; extra == "cuda"',
            'coloredlogs; extra == "training"',
        ],
        members={
            f"{capi}tensorrt.so": (
                _elf(
                    "libnvinfer.so.10",
                    "libnvonnxparser.so.10",
                    "libcudart.so.13",
                    "libstdc++.so.6",
                    "libc.so.6",
                ),
                DEFLATED,
            ),
            f"{capi}cuda.so": (
                _elf("libcublas.so.13", cuda_provider_cudart, "libm.so.6", late="libcufft.so.12"),
                STORED,
            ),
            f"{capi}openvino.so": (_elf("libcudart.so.11", "libnvinfer.so.8"), STORED),
        },
        compression=STORED,
    )
    w.wheel("onnxruntime-gpu", "1.30.0", tags=("cp311-cp311-manylinux_2_28_x86_64",))
    for version, nvinfer in (("10.16.1.11", bindings_nvinfer), ("11.4.0.106", "libnvinfer.so.11")):
        w.sdist(
            "tensorrt-cu13",
            version,
            requires=[f"tensorrt-cu13-libs=={version}", f"tensorrt-cu13-bindings=={version}"],
            build_requires=["setuptools>=61", "wheel"],
        )
        w.sdist(
            "tensorrt-cu13-libs",
            version,
            requires=["nvidia-cuda-runtime==13.0.88.*"],
            build_requires=["wheel-stub"],
            pkg_info=False,  # the requirements come from pyproject.toml's [project]
        )
        w.wheel(
            "tensorrt-cu13-bindings",
            version,
            tags=("cp311-none-manylinux_2_28_x86_64", "cp310-none-manylinux_2_28_x86_64"),
            members={
                "tensorrt_bindings/tensorrt.so": (
                    _elf(nvinfer, "libnvinfer_plugin.so.10", "libpython3.11.so.1.0"),
                    DEFLATED,
                )
            },
        )
    w.wheel("wheel", "0.48.0")
    w.wheel("wheel-stub", "0.5.0", requires=["packaging"])
    w.wheel("meson-python", "0.19.0")


EXPECTED = {
    "cuda-toolkit": "13.0.3.0",
    "filelock": "4.3.1",
    "mpmath": "1.3.0",
    "numpy": "2.4.6",
    "nvidia-cublas": "13.1.1.3",
    "nvidia-cuda-runtime": "13.0.88",
    "nvidia-cudnn-cu13": "9.20.0.48",
    "nvidia-curand": "10.4.0.35",
    "onnxruntime-gpu": "1.31.1",
    "packaging": "26.4",
    "setuptools": "84.2.1",
    "sympy": "1.14.0",
    "tensorrt-cu13": "10.16.1.11",
    "tensorrt-cu13-bindings": "10.16.1.11",
    "tensorrt-cu13-libs": "10.16.1.11",
    "torch": "2.13.0",
}
EXPECTED_BUILD = {
    "packaging": "26.4",
    "setuptools": "84.2.1",
    "wheel": "0.48.0",
    "wheel-stub": "0.5.0",
}
REQ_LINE = re.compile(r"^([a-z0-9][a-z0-9.-]*)==([^ ]+) \\$")
HASH_LINE = re.compile(r"^    --hash=sha256:([0-9a-f]{64})( \\)?$")


def parse_lock(text: str) -> tuple[list[str], dict[str, tuple[str, list[str]]]]:
    """(comment lines, name -> (version, hashes)) of a lock; asserts its shape on the way."""
    header, pins, current = [], {}, None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#"):
            assert not pins, f"comment after the requirements: {line!r}"
            header.append(line)
        elif match := REQ_LINE.match(line):
            assert match[1] not in pins, f"{match[1]} twice"
            current = match[1]
            pins[current] = (match[2], [])
        elif match := HASH_LINE.match(line):
            assert current is not None, line
            pins[current][1].append(match[1])
            last = i + 1 == len(lines) or not lines[i + 1].startswith("    --hash")
            assert (match[2] is None) == last, f"continuation wrong on {line!r}"
        else:
            raise AssertionError(f"unexpected line {line!r}")
    assert all(hashes for _, hashes in pins.values()), "a requirement without a hash"
    return header, pins


@pytest.fixture
def cpu_lock(tmp_path) -> Path:
    path = tmp_path / "animator.txt"
    path.write_text(CPU_LOCK)
    return path


# ------------------------------------------------------------------------- the lock


def test_lock_texts_pins_hashes_extras_markers_and_header(world, cpu_lock):
    build_world(world)
    texts = lc.lock_texts(lc.Index(world.index_url), cpu_lock=cpu_lock)
    assert sorted(texts) == ["animator-gpu-build.txt", "animator-gpu.txt"]

    header, pins = parse_lock(texts["animator-gpu.txt"])
    # The closure, exactly: CPU pins kept (torch without +cpu, numpy and setuptools not the
    # newest), onnxruntime replaced, extras asked for followed (cuda-toolkit's cublas from torch,
    # its curand from onnxruntime-gpu's cuda extra), extras not asked for and win32-only deps
    # left out, the newest non-yanked final sympy, the runtime the TensorRT libs pin.
    assert {n: v for n, (v, _) in pins.items()} == EXPECTED
    assert list(pins) == sorted(pins)
    for absent in ("onnxruntime", "pywin32-ctypes", "opt-einsum", "coloredlogs", "nvidia-cufft"):
        assert absent not in pins
    # Each pin carries the hashes of exactly the files of that release the target installs:
    # its manylinux x86_64 / cp311 / py3 wheels, the sdist only where there is no wheel.
    for name, (version, hashes) in pins.items():
        assert hashes == sorted(world.target[(name, version)]), name
    assert len(pins["numpy"][1]) == 2
    assert len(pins["tensorrt-cu13-libs"][1]) == 1

    assert "#   onnxruntime CUDA provider links: libcublas.so.13, libcudart.so.13" in header
    assert (
        "#   onnxruntime TensorRT provider links: "
        "libcudart.so.13, libnvinfer.so.10, libnvonnxparser.so.10"
    ) in header
    assert "#   tensorrt bindings link: libnvinfer.so.10, libnvinfer_plugin.so.10" in header
    assert "#   torch CUDA toolkit: 13.0.3.0" in header
    assert "#   CUDA major: 13" in header
    assert any(
        line.startswith("# Source distributions: tensorrt-cu13, tensorrt-cu13-libs.")
        for line in header
    )

    build_header, build = parse_lock(texts["animator-gpu-build.txt"])
    # The sdists' build-system requires (setuptools held at the CPU pin), and their closure;
    # numpy's sdist is not taken, so its meson-python is not either.
    assert {n: v for n, (v, _) in build.items()} == EXPECTED_BUILD
    for name, (version, hashes) in build.items():
        assert hashes == sorted(world.target[(name, version)]), name
    assert build_header[0].startswith("# Build backends of the source distributions")

    # The index was read as the tool says: torch's METADATA from its .metadata file, the
    # large stored library only in its first MiB (the soname past it is not in the header).
    assert world.served("torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl.metadata") > 0
    assert world.served("torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl") == 0
    assert "libcufft.so.12" not in texts["animator-gpu.txt"]
    ort = "onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
    assert len(world.blobs[ort]) > MIB
    assert max(n for path, _, n in world.log if path.endswith(ort)) <= MIB
    assert all(spec for path, spec, _ in world.log if path.endswith(".whl"))


def test_lock_texts_is_deterministic(world, cpu_lock):
    build_world(world)
    first = lc.lock_texts(lc.Index(world.index_url), cpu_lock=cpu_lock)
    second = lc.lock_texts(lc.Index(world.index_url), cpu_lock=cpu_lock)
    assert first == second


def test_cpu_pins_drop_local_tags_and_comments(cpu_lock):
    assert lc.cpu_pins(cpu_lock) == {
        "filelock": "4.3.1",
        "numpy": "2.4.6",
        "onnxruntime": "1.32.0",
        "packaging": "26.4",
        "setuptools": "84.2.1",
        "torch": "2.13.0",
    }


# ------------------------------------------------------------------------- resolving


def test_loose_spec_met_first_restarts_to_the_exact_one(world):
    build_world(world)
    index = lc.Index(world.index_url)
    # Alone, onnxruntime-gpu's `~=13.0` takes the newest runtime...
    alone = lc.resolve(index, [Requirement("onnxruntime-gpu[cuda]==1.31.1")], {})
    assert alone["nvidia-cuda-runtime"].version == "13.5.0"
    # ...but the TensorRT libs, met later in the walk, need 13.0.88.*: the walk restarts with
    # that known and settles on 13.0.88, not the newer 13.0.96 or 13.5.0.
    roots = [Requirement("onnxruntime-gpu[cuda]==1.31.1"), Requirement("tensorrt-cu13==10.16.1.11")]
    both = lc.resolve(index, roots, {})
    assert both["nvidia-cuda-runtime"].version == "13.0.88"
    assert both["tensorrt-cu13-libs"].requires == [Requirement("nvidia-cuda-runtime==13.0.88.*")]


def test_pinned_package_that_a_dep_excludes_names_both(world):
    build_world(world)
    world.wheel("needs-old-numpy", "1.0", requires=["numpy<2"])
    index = lc.Index(world.index_url)
    roots = [Requirement("numpy==2.4.6"), Requirement("needs-old-numpy")]
    with pytest.raises(lc.LockError) as err:
        lc.resolve(index, roots, {"numpy": "2.4.6"})
    message = str(err.value)
    assert "needs-old-numpy needs numpy<2" in message
    assert "numpy==2.4.6" in message


def test_requirements_that_cannot_meet_raise(world):
    world.wheel("left", "1.0", requires=["shared>=2"])
    world.wheel("right", "1.0", requires=["shared<2"])
    for version in ("1.0", "2.0"):
        world.wheel("shared", version)
    index = lc.Index(world.index_url)
    with pytest.raises(lc.LockError, match="no release of shared satisfies"):
        lc.resolve(index, [Requirement("left"), Requirement("right")], {})


def test_release_without_a_file_for_the_target_raises(world):
    world.wheel("windows-only", "1.0", tags=("cp311-cp311-win_amd64", "py3-none-win_amd64"))
    with pytest.raises(lc.LockError, match=r"windows-only==1.0: no file for CPython 3.11"):
        lc.resolve(lc.Index(world.index_url), [Requirement("windows-only")], {})


# ------------------------------------------------------------------------------ facts


def test_tensorrt_major_other_than_the_provider_links_is_refused(world, cpu_lock, monkeypatch):
    build_world(world)
    monkeypatch.setattr(lc, "TENSORRT", "tensorrt-cu13==11.4.0.106")
    with pytest.raises(lc.LockError) as err:
        lc.lock_texts(lc.Index(world.index_url), cpu_lock=cpu_lock)
    assert "provider needs libnvinfer.so.10" in str(err.value)
    assert "TensorRT 11.4.0.106" in str(err.value)


def test_bindings_of_another_tensorrt_major_are_refused(world, cpu_lock):
    build_world(world, bindings_nvinfer="libnvinfer.so.11")
    with pytest.raises(lc.LockError, match=r"tensorrt bindings link .*libnvinfer\.so\.11"):
        lc.lock_texts(lc.Index(world.index_url), cpu_lock=cpu_lock)


def test_cuda_majors_that_disagree_are_refused(world, cpu_lock):
    build_world(world, cuda_provider_cudart="libcudart.so.12")
    with pytest.raises(lc.LockError, match=r"disagree on the CUDA major: \['12', '13'\]"):
        lc.lock_texts(lc.Index(world.index_url), cpu_lock=cpu_lock)


# ------------------------------------------------------------------------ RemoteWheel


def _zip(members: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, (data, method) in members.items():
            zf.writestr(name, data, compress_type=method)
    return buf.getvalue()


def _as_zip64(data: bytes) -> bytes:
    """The same archive with zip64 end records, each central entry's uncompressed size and
    local header offset moved into a zip64 extra field (as writers do past 4 GiB)."""
    end = data.rfind(b"PK\x05\x06")
    count, cd_size, cd_offset = struct.unpack("<HII", data[end + 10 : end + 20])
    cd, pos, out = data[cd_offset : cd_offset + cd_size], 0, b""
    while cd[pos : pos + 4] == b"PK\x01\x02":
        usize = struct.unpack("<I", cd[pos + 24 : pos + 28])[0]
        name_len, extra_len, comment_len = struct.unpack("<HHH", cd[pos + 28 : pos + 34])
        offset = struct.unpack("<I", cd[pos + 42 : pos + 46])[0]
        rest = cd[pos + 46 : pos + 46 + name_len + extra_len + comment_len]
        name, extra = rest[:name_len], rest[name_len : name_len + extra_len]
        out += (
            cd[pos : pos + 24]
            + struct.pack("<I", 0xFFFFFFFF)
            + struct.pack("<HHH", name_len, extra_len + 20, comment_len)
            + cd[pos + 34 : pos + 42]
            + struct.pack("<I", 0xFFFFFFFF)
            + name
            + extra
            + struct.pack("<HHQQ", 1, 16, usize, offset)
            + rest[name_len + extra_len :]
        )
        pos += 46 + name_len + extra_len + comment_len
    z64 = cd_offset + len(out)
    record = struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(out), cd_offset
    )
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, z64, 1)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, *(2 * [0xFFFFFFFF]), 0)
    return data[:cd_offset] + out + record + locator + eocd


MEMBERS = {
    "pkg/stored.bin": (bytes(range(256)) * 600, STORED),
    "pkg/deflated.txt": (b"deflated text, " * 5000, DEFLATED),
    "pkg/empty": (b"", STORED),
    "pkg-1.0.dist-info/METADATA": (b"Metadata-Version: 2.1\nName: pkg\n", DEFLATED),
}


@pytest.mark.parametrize("layout", ["zip32", "zip64"])
def test_remote_wheel_reads_members_by_range(world, layout):
    data = _zip(MEMBERS)
    if layout == "zip64":
        data = _as_zip64(data)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:  # the archive is valid to zipfile too
            assert zf.read("pkg/stored.bin") == MEMBERS["pkg/stored.bin"][0]
    entry = world.add("pkg", "1.0", "pkg-1.0-py3-none-any.whl", data, True)
    wheel = lc.RemoteWheel(entry["url"], entry["size"])
    assert sorted(wheel.members) == sorted(MEMBERS)
    for name, (content, _) in MEMBERS.items():
        assert wheel.read(name) == content, name
    assert wheel.read("pkg/stored.bin", limit=1000) == MEMBERS["pkg/stored.bin"][0][:1000]
    head = wheel.read("pkg/deflated.txt", limit=100)
    assert head and MEMBERS["pkg/deflated.txt"][0].startswith(head)
    assert all(spec is not None for _, spec, _ in world.log)


@pytest.mark.parametrize("size", ["small", "large"])
def test_remote_wheel_refuses_a_server_that_ignores_ranges(world, size):
    members = dict(MEMBERS)
    if size == "large":  # larger than the 64 KiB tail the first request asks for
        members["pkg/big.bin"] = (hashlib.sha256(b"x").digest() * 8192, STORED)
    entry = world.add("pkg", "1.0", "pkg-1.0-py3-none-any.whl", _zip(members), True)
    world.ignore_range = True
    with pytest.raises(lc.LockError, match="ignored a range request"):
        lc.RemoteWheel(entry["url"], entry["size"])


def test_remote_wheel_refuses_what_it_cannot_read(world):
    entry = world.add("pkg", "1.0", "pkg-1.0-py3-none-any.whl", b"not a zip" * 100, True)
    with pytest.raises(lc.LockError, match="no zip end record"):
        lc.RemoteWheel(entry["url"], entry["size"])
    data = _zip({"pkg/b.bin": (b"bzip2 " * 100, zipfile.ZIP_BZIP2)})
    entry = world.add("pkg", "1.0", "pkg-1.0-cp311-cp311-win_amd64.whl", data, False)
    with pytest.raises(lc.LockError, match="uses zip method 12"):
        lc.RemoteWheel(entry["url"], entry["size"]).read("pkg/b.bin")


# ------------------------------------------------------------------------------- main


def test_main_writes_then_checks_for_drift(world, cpu_lock, tmp_path, monkeypatch, capsys):
    build_world(world)
    out = tmp_path / "requirements"
    out.mkdir()
    monkeypatch.setattr(lc, "OUT_DIR", out)
    monkeypatch.setattr(lc, "lock_texts", functools.partial(lc.lock_texts, cpu_lock=cpu_lock))
    argv = ["--index", world.index_url]

    assert lc.main([*argv, "--check"]) == 1  # nothing written yet
    assert "stale lock files: animator-gpu.txt, animator-gpu-build.txt" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == []

    assert lc.main(argv) == 0
    assert f"wrote {out / 'animator-gpu.txt'}" in capsys.readouterr().out  # outside the repo
    written = {p.name: p.read_text() for p in out.iterdir()}
    assert written == lc.lock_texts(lc.Index(world.index_url))
    assert lc.main([*argv, "--check"]) == 0

    path = out / "animator-gpu.txt"
    path.write_text(path.read_text().replace("sympy==1.14.0", "sympy==1.13.3"))
    capsys.readouterr()
    assert lc.main([*argv, "--check"]) == 1
    assert capsys.readouterr().err.strip() == "stale lock files: animator-gpu.txt"
    assert "sympy==1.13.3" in path.read_text()  # --check never writes


def test_main_reports_a_lock_error_and_writes_nothing(
    world, cpu_lock, tmp_path, monkeypatch, capsys
):
    build_world(world, cuda_provider_cudart="libcudart.so.12")
    monkeypatch.setattr(lc, "OUT_DIR", tmp_path)
    monkeypatch.setattr(lc, "lock_texts", functools.partial(lc.lock_texts, cpu_lock=cpu_lock))
    assert lc.main(["--index", world.index_url]) == 1
    assert capsys.readouterr().err.startswith("lock_cuda: the wheels disagree on the CUDA major")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["animator.txt"]


# ------------------------------------------------------------------ the committed lock


def test_committed_cuda_lock_is_hash_locked_and_agrees_with_the_cpu_lock():
    header, pins = parse_lock((LOCK_DIR / "animator-gpu.txt").read_text())
    assert "onnxruntime" not in pins
    assert "onnxruntime-gpu" in pins
    assert {"tensorrt-cu13", "tensorrt-cu13-libs", "tensorrt-cu13-bindings"} <= set(pins)
    cpu = lc.cpu_pins(LOCK_DIR / "animator.txt")
    for name, version in cpu.items():
        if name not in lc.REPLACED:
            assert pins.get(name, (None,))[0] == version, f"{name}: CPU lock has {version}"
    assert f"onnxruntime-gpu=={pins['onnxruntime-gpu'][0]}" == re.sub(r"\[.*\]", "", lc.ORT_GPU)
    assert f"tensorrt-cu13=={pins['tensorrt-cu13'][0]}" == lc.TENSORRT

    (provider,) = [line for line in header if "onnxruntime TensorRT provider links" in line]
    nvinfer = re.findall(r"\blibnvinfer\.so\.(\d+)\b", provider)
    assert nvinfer == [pins["tensorrt-cu13-libs"][0].split(".")[0]], provider
    assert "#   CUDA major: 13" in header

    _, build = parse_lock((LOCK_DIR / "animator-gpu-build.txt").read_text())
    assert {"wheel-stub", "setuptools"} <= set(build)
    for name, (version, _) in build.items():
        if name in cpu:
            assert version == cpu[name], f"{name}: the build lock strays from the CPU pin"
