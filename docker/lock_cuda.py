"""Write the hash-locked CUDA lock of the animator image from the package index.

`requirements/animator.txt` is locked from this machine's virtualenv, which holds the CPU
builds. The CUDA image needs other files: torch's PyPI wheel with its CUDA libraries,
onnxruntime-gpu in place of onnxruntime, and TensorRT. None of them can be installed here,
so this tool reads what it needs from the index instead of from installed metadata:

* the simple JSON API (PEP 691) gives every file of a release and its sha256;
* a wheel's METADATA is read with HTTP range requests (the zip's central directory, then the
  one member), so a 500 MB wheel costs a few hundred KB;
* the same range reads open the first MiB of a shared library inside a wheel and list the
  sonames its dynamic string table names: that is how the CUDA major of each wheel and the
  TensorRT major that onnxruntime's TensorRT provider was linked against are known, rather
  than assumed.

The closure starts from the animator lock (onnxruntime swapped for onnxruntime-gpu with its
`cuda` and `cudnn` extras, plus TensorRT's libraries and bindings) and follows Requires-Dist
for CPython 3.11 on manylinux x86_64 (glibc 2.36, the image's Debian 12). A package the CPU
lock pins keeps that version, so the image runs the versions the tests ran. Output:

* `requirements/animator-gpu.txt`: every distribution with `--hash=sha256:` for each file of
  that release the target can install; installed with `--require-hashes --no-deps`, so pip
  can fetch nothing that is not listed here.
* `requirements/animator-gpu-build.txt`: the build backends of the sdists in the closure,
  hash-locked the same way, installed first so the main install can run without build
  isolation (an isolated build would fetch its backend unchecked).

The lock refuses to write when onnxruntime's TensorRT provider was linked against another
TensorRT major than the one locked, or when the wheels disagree on the CUDA major.

Usage (needs the index, not a GPU): `python docker/lock_cuda.py` (or `make lock-cuda`);
`--check` compares with the committed files and exits 1 on drift.
"""

from __future__ import annotations

import argparse
import email.parser
import io
import json
import re
import struct
import sys
import tarfile
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lock_requirements import OUT_DIR, write_locks

INDEX = "https://pypi.org/simple"
# onnxruntime-gpu trails the CPU wheel by a release on PyPI (1.32.0 CPU, 1.31.1 GPU).
ORT_GPU = "onnxruntime-gpu[cuda,cudnn]==1.31.1"
# The TensorRT major onnxruntime-gpu 1.31.1's TensorRT provider is linked against is 10 (it
# names libnvinfer.so.10); 10.16.1.11 is the newest 10.x built for CUDA 13. TensorRT 11
# (rank-5 GridSample) cannot serve that provider: its library is libnvinfer.so.11.
TENSORRT = "tensorrt-cu13==10.16.1.11"  # -> tensorrt-cu13-libs and -bindings
REPLACED = {"onnxruntime"}  # CPU build in animator.txt, replaced by onnxruntime-gpu
GLIBC_MINOR = 36  # python:3.11-slim-bookworm
TARGET_ENV = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.11",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.11",
    "python_version": "3.11",
    "sys_platform": "linux",
}
# Shared libraries whose sonames are recorded in the lock header: wheel name -> member regex.
INSPECT = {
    "onnxruntime-gpu": r"capi/libonnxruntime_providers_(cuda|tensorrt)\.so$",
    "tensorrt-cu13-bindings": r"tensorrt_bindings/tensorrt\.so$",
}
SONAME = re.compile(rb"lib[A-Za-z0-9_+-]+\.so(?:\.[0-9]+)*")
SONAME_OF_INTEREST = re.compile(r"cudart|cublas|cudnn|nvinfer|nvonnxparser|cufft|curand")


class LockError(Exception):
    """The closure cannot be locked as asked (missing file, conflict, mismatch)."""


def target_tags() -> set[Tag]:
    platforms = [f"manylinux_2_{m}_x86_64" for m in range(GLIBC_MINOR, 16, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    tags = set(cpython_tags((3, 11), abis=["cp311", "abi3", "none"], platforms=platforms))
    tags |= set(compatible_tags((3, 11), "cp311", platforms))
    return tags


# ---------------------------------------------------------------------------- HTTP


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read()


def _range(url: str, start: int, end: int) -> bytes:
    data = _get(url, {"Range": f"bytes={start}-{end}"})
    if len(data) != end - start + 1:
        raise LockError(f"{url}: the server ignored a range request (got {len(data)} bytes)")
    return data


class RemoteWheel:
    """A wheel on a server that honours range requests, read member by member."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size = url, size
        self.members = self._central_directory()

    def _central_directory(self) -> dict[str, tuple[int, int, int]]:
        tail = _range(self.url, max(0, self.size - 65536), self.size - 1)
        end = tail.rfind(b"PK\x05\x06")
        if end < 0:
            raise LockError(f"{self.url}: no zip end record")
        cd_size, cd_offset = struct.unpack("<II", tail[end + 12 : end + 20])
        if cd_offset == 0xFFFFFFFF:  # zip64
            z64 = tail.rfind(b"PK\x06\x06")
            cd_size, cd_offset = struct.unpack("<QQ", tail[z64 + 40 : z64 + 56])
        cd = _range(self.url, cd_offset, cd_offset + cd_size - 1)
        members, pos = {}, 0
        while cd[pos : pos + 4] == b"PK\x01\x02":
            method = struct.unpack("<H", cd[pos + 10 : pos + 12])[0]
            csize = struct.unpack("<I", cd[pos + 20 : pos + 24])[0]
            name_len, extra_len, comment_len = struct.unpack("<HHH", cd[pos + 28 : pos + 34])
            offset = struct.unpack("<I", cd[pos + 42 : pos + 46])[0]
            name = cd[pos + 46 : pos + 46 + name_len].decode()
            extra = cd[pos + 46 + name_len : pos + 46 + name_len + extra_len]
            csize, offset = _zip64_sizes(extra, csize, offset, cd[pos + 24 : pos + 28])
            members[name] = (method, csize, offset)
            pos += 46 + name_len + extra_len + comment_len
        return members

    def read(self, name: str, limit: int | None = None) -> bytes:
        """Member `name`, whole or (limit) its first `limit` uncompressed bytes or so."""
        method, csize, offset = self.members[name]
        header = _range(self.url, offset, offset + 29)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = offset + 30 + name_len + extra_len
        want = csize if limit is None else min(csize, limit)
        raw = _range(self.url, start, start + want - 1) if want else b""
        if method == 0:
            return raw
        if method != 8:
            raise LockError(f"{self.url}: {name} uses zip method {method}")
        return zlib.decompressobj(-15).decompress(raw)


def _zip64_sizes(extra: bytes, csize: int, offset: int, usize_raw: bytes) -> tuple[int, int]:
    usize = struct.unpack("<I", usize_raw)[0]
    pos = 0
    while pos + 4 <= len(extra):
        hid, hlen = struct.unpack("<HH", extra[pos : pos + 4])
        if hid == 1:
            values = list(struct.unpack(f"<{hlen // 8}Q", extra[pos + 4 : pos + 4 + hlen]))
            if usize == 0xFFFFFFFF:
                values.pop(0)
            if csize == 0xFFFFFFFF:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF:
                offset = values.pop(0)
        pos += 4 + hlen
    return csize, offset


# --------------------------------------------------------------------------- index


@dataclass
class Release:
    name: str
    version: str
    files: list[dict]  # the files the target can install: wheels first, else the sdist
    requires: list[Requirement] = field(default_factory=list)
    build_requires: list[str] = field(default_factory=list)
    sonames: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_sdist(self) -> bool:
        return not self.files[0]["filename"].endswith(".whl")


class Index:
    def __init__(self, base: str = INDEX) -> None:
        self.base = base.rstrip("/")
        self.tags = target_tags()
        self._pages: dict[str, list[dict]] = {}
        self._releases: dict[tuple[str, str], Release] = {}

    def files(self, name: str) -> list[dict]:
        key = canonicalize_name(name)
        if key not in self._pages:
            page = f"{self.base}/{key}/"
            body = _get(page, {"Accept": "application/vnd.pypi.simple.v1+json"})
            files = json.loads(body)["files"]
            for f in files:  # PEP 691 allows URLs relative to the page
                f["url"] = urllib.parse.urljoin(page, f["url"])
            self._pages[key] = files
        return self._pages[key]

    def versions(self, name: str) -> list[Version]:
        out = set()
        for f in self.files(name):
            if f.get("yanked"):
                continue
            try:
                out.add(_file_version(f["filename"]))
            except ValueError:
                continue
        return sorted(out)

    def release(self, name: str, version: str) -> Release:
        key = (canonicalize_name(name), version)
        if key not in self._releases:
            self._releases[key] = self._release(name, version)
        return self._releases[key]

    def _release(self, name: str, version: str) -> Release:
        wheels, sdists = [], []
        for f in self.files(name):
            try:
                if _file_version(f["filename"]) != Version(version):
                    continue
            except ValueError:
                continue
            if f["filename"].endswith(".whl"):
                _, _, _, tags = parse_wheel_filename(f["filename"])
                if tags & self.tags:
                    wheels.append(f)
            elif f["filename"].endswith(".tar.gz"):
                sdists.append(f)
        files = sorted(wheels, key=lambda f: f["filename"]) or sdists[:1]
        if not files:
            raise LockError(f"{name}=={version}: no file for CPython 3.11 manylinux x86_64")
        rel = Release(canonicalize_name(name), version, files)
        if rel.is_sdist:
            rel.requires, rel.build_requires = self._sdist_metadata(files[0])
        else:
            rel.requires, rel.sonames = self._wheel_metadata(rel, files[0])
        return rel

    def _wheel_metadata(self, rel: Release, f: dict) -> tuple[list[Requirement], dict]:
        wheel = None
        if f.get("core-metadata") or f.get("data-dist-info-metadata"):
            text = _get(f["url"] + ".metadata").decode()
        else:
            wheel = RemoteWheel(f["url"], int(f["size"]))
            (meta,) = [
                m for m in wheel.members if m.endswith(".dist-info/METADATA") and m.count("/") == 1
            ]
            text = wheel.read(meta).decode()
        sonames = {}
        pattern = INSPECT.get(rel.name)
        if pattern:
            wheel = wheel or RemoteWheel(f["url"], int(f["size"]))
            for member in wheel.members:
                if re.search(pattern, member):
                    head = wheel.read(member, limit=1 << 20)
                    names = sorted({m.decode() for m in SONAME.findall(head)})
                    sonames[member.rsplit("/", 1)[-1]] = [
                        n for n in names if SONAME_OF_INTEREST.search(n)
                    ]
        return _requires(text), sonames

    def _sdist_metadata(self, f: dict) -> tuple[list[Requirement], list[str]]:
        data = _get(f["url"])
        reqs, build = [], []
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if len(parts) != 2:
                    continue
                if parts[1] == "PKG-INFO":
                    reqs = _requires(tar.extractfile(member).read().decode())
                elif parts[1] == "pyproject.toml":
                    import tomllib

                    project = tomllib.loads(tar.extractfile(member).read().decode())
                    build = project.get("build-system", {}).get("requires", [])
                    if not reqs:
                        reqs = [
                            Requirement(r)
                            for r in project.get("project", {}).get("dependencies", [])
                        ]
        return reqs, build


def _file_version(filename: str) -> Version:
    if filename.endswith(".whl"):
        return parse_wheel_filename(filename)[1]
    if filename.endswith(".tar.gz"):
        return parse_sdist_filename(filename)[1]
    raise ValueError(filename)


def _requires(metadata_text: str) -> list[Requirement]:
    msg = email.parser.Parser().parsestr(metadata_text, headersonly=True)
    return [Requirement(r) for r in msg.get_all("Requires-Dist") or []]


# ------------------------------------------------------------------------ closure


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**TARGET_ENV, "extra": e}) for e in extras)


def resolve(index: Index, roots: list[Requirement], pins: dict[str, str]) -> dict[str, Release]:
    """Every release the roots need on the target. A name in `pins` takes that version;
    otherwise the newest final release that satisfies every requirement on that name.
    Requirements met after a choice that they exclude restart the walk with that
    requirement known from the start (a few rounds at most); a pin that a requirement
    excludes is a LockError."""
    known: dict[str, SpecifierSet] = {}
    for _ in range(20):
        chosen, conflict = _walk(index, roots, pins, known)
        if conflict is None:
            return chosen
        parent, req = conflict
        name = canonicalize_name(req.name)
        merged = known.get(name, SpecifierSet()) & req.specifier
        if name in pins or merged == known.get(name):
            raise LockError(
                f"{parent} needs {req}, but the lock has {req.name}=={chosen[name].version}"
            )
        known[name] = merged
    raise LockError("the requirements did not settle in 20 rounds")


def _walk(
    index: Index, roots: list[Requirement], pins: dict[str, str], known: dict[str, SpecifierSet]
) -> tuple[dict[str, Release], tuple[str, Requirement] | None]:
    chosen: dict[str, Release] = {}
    extras_done: dict[str, set[str]] = {}
    todo = [("(root)", r) for r in roots]
    while todo:
        parent, req = todo.pop(0)
        name = canonicalize_name(req.name)
        if name not in chosen:
            version = _pick(index, name, req, pins, known.get(name, SpecifierSet()))
            chosen[name] = index.release(name, version)
            extras_done[name] = set()
        if not req.specifier.contains(chosen[name].version, prereleases=True):
            return chosen, (parent, req)
        new = ({canonicalize_name(e) for e in req.extras} | {""}) - extras_done[name]
        if not new:
            continue
        extras_done[name] |= new
        todo += [(name, sub) for sub in chosen[name].requires if _applies(sub, new)]
    return chosen, None


def _pick(
    index: Index, name: str, req: Requirement, pins: dict[str, str], known: SpecifierSet
) -> str:
    if name in pins:
        return pins[name]
    spec = req.specifier & known
    ok = [v for v in index.versions(name) if not v.is_prerelease and v in spec]
    if not ok:
        raise LockError(f"no release of {name} satisfies {spec}")
    return str(ok[-1])


def cpu_pins(path: Path) -> dict[str, str]:
    """Name -> version of a `name==version` lock file (local tags such as +cpu dropped)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            pins[canonicalize_name(req.name)] = spec.version.split("+", 1)[0]
    return pins


def facts(releases: dict[str, Release]) -> dict[str, str]:
    """CUDA and TensorRT majors as the wheels declare and link them; LockError on a split."""
    ort = releases["onnxruntime-gpu"].sonames
    trt_ep = ort.get("libonnxruntime_providers_tensorrt.so", [])
    cuda_ep = ort.get("libonnxruntime_providers_cuda.so", [])
    bindings = releases["tensorrt-cu13-bindings"].sonames.get("tensorrt.so", [])

    def major(names: list[str], stem: str) -> str | None:
        found = {n.rsplit(".", 1)[-1] for n in names if n.startswith(f"{stem}.so.")}
        return found.pop() if len(found) == 1 else None

    out = {
        "onnxruntime CUDA provider links": ", ".join(cuda_ep) or "?",
        "onnxruntime TensorRT provider links": ", ".join(trt_ep) or "?",
        "tensorrt bindings link": ", ".join(bindings) or "?",
    }
    toolkit = releases.get("cuda-toolkit")
    out["torch CUDA toolkit"] = toolkit.version if toolkit else "?"
    ep_trt, locked_trt = major(trt_ep, "libnvinfer"), releases["tensorrt-cu13-libs"].version
    if ep_trt is None or ep_trt != locked_trt.split(".")[0]:
        raise LockError(
            f"onnxruntime's TensorRT provider needs libnvinfer.so.{ep_trt}, but the lock has "
            f"TensorRT {locked_trt}: pick a TensorRT of that major"
        )
    if major(bindings, "libnvinfer") != ep_trt:
        raise LockError(f"tensorrt bindings link {bindings}, the provider needs .so.{ep_trt}")
    cudas = {major(cuda_ep, "libcudart"), major(trt_ep, "libcudart")}
    if toolkit:
        cudas.add(toolkit.version.split(".")[0])
    if len(cudas) != 1 or None in cudas:
        raise LockError(f"the wheels disagree on the CUDA major: {sorted(map(str, cudas))}")
    out["CUDA major"] = cudas.pop()
    return out


# -------------------------------------------------------------------------- output


def _lines(releases: dict[str, Release]) -> list[str]:
    out = []
    for name in sorted(releases):
        rel = releases[name]
        hashes = sorted({f["hashes"]["sha256"] for f in rel.files})
        out.append(f"{name}=={rel.version} \\")
        out += [
            f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else "")
            for i, h in enumerate(hashes)
        ]
    return out


def lock_texts(index: Index, cpu_lock: Path = OUT_DIR / "animator.txt") -> dict[str, str]:
    """File name -> text of the two lock files, from `cpu_lock`'s pins and the index."""
    pins = cpu_pins(cpu_lock)
    roots = [Requirement(f"{n}=={v}") for n, v in pins.items() if n not in REPLACED]
    roots += [Requirement(ORT_GPU), Requirement(TENSORRT)]
    releases = resolve(index, roots, pins)
    info = facts(releases)
    stubs = sorted(n for n, r in releases.items() if r.is_sdist)
    build_roots = sorted({b for r in releases.values() for b in r.build_requires})
    build = resolve(index, [Requirement(b) for b in build_roots], pins) if build_roots else {}
    header = [
        "# CUDA lock of the animator image (docker/Dockerfile.gpu, bench/gpu_check.sh):",
        "# generated by docker/lock_cuda.py from the package index. Do not edit.",
        "# Install: pip install --require-hashes --no-deps -r animator-gpu-build.txt, then",
        "#          pip install --require-hashes --no-deps --no-build-isolation -r this file.",
        "# Target: CPython 3.11, manylinux x86_64, glibc 2.36. What the wheels link:",
    ]
    header += [f"#   {k}: {v}" for k, v in info.items()]
    if stubs:
        header += [
            f"# Source distributions: {', '.join(stubs)}. tensorrt-cu13-libs on PyPI is a",
            "# wheel-stub: building it downloads NVIDIA's wheel from pypi.nvidia.com and checks",
            "# it against the sha256 that index publishes; its hash here pins the stub only.",
        ]
    build_header = [
        "# Build backends of the source distributions in animator-gpu.txt, installed first",
        "# (see that file). Generated by docker/lock_cuda.py. Do not edit.",
    ]
    return {
        "animator-gpu.txt": "\n".join(header + _lines(releases)) + "\n",
        "animator-gpu-build.txt": "\n".join(build_header + _lines(build)) + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default=INDEX, help="simple index URL (PEP 691 JSON)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    args = parser.parse_args(argv)
    try:
        texts = lock_texts(Index(args.index))
    except LockError as exc:
        print(f"lock_cuda: {exc}", file=sys.stderr)
        return 1
    return write_locks(texts, OUT_DIR, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
