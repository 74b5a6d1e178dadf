"""Fetch the real LivePortrait weights from the Hugging Face hub, verified, with a manifest.

`fetch_weights` lists the five upstream files of `KwaiVGI/LivePortrait`, takes their size and
sha256 from the hub's LFS metadata, downloads them (upstream tree under `liveportrait/`),
checks size and sha256 and writes `DYNAMICS_WEIGHTS_MANIFEST.json` (plus the packaged human
`models.yaml`, replacing any stale one). Later loads compare the files against that manifest
and report provenance "real". Without network (or with HF_HUB_OFFLINE=1) it fails at once with
a one-line `WeightsFetchError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from services.animator.checkpoint_format import (
    BASE_DIR,
    BASE_FILES,
    CONFIG_FILE,
    MANIFEST_FILE,
    RANDOM_MARKER,
    RETARGETING_DIR,
    STITCHING_FILE,
    TREE_ROOT,
)
from services.animator.model import default_config_path
from services.common.errors import UnavailableError

logger = logging.getLogger(__name__)

DEFAULT_REPO_ID = "KwaiVGI/LivePortrait"
DEFAULT_REVISION = "main"
HUB_FILES = tuple(f"{TREE_ROOT}/{BASE_DIR}/{name}" for name in BASE_FILES.values()) + (
    f"{TREE_ROOT}/{RETARGETING_DIR}/{STITCHING_FILE}",
)
_CHUNK = 1 << 20


class WeightsFetchError(UnavailableError):
    """The hub could not be reached, lacks a file, or a download failed verification."""

    default_reason = "weights_fetch_failed"


@dataclass(frozen=True)
class RemoteFile:
    """One hub file with the size and sha256 from its LFS pointer."""

    path: str
    size: int
    sha256: str


def list_remote_files(
    repo_id: str = DEFAULT_REPO_ID,
    revision: str = DEFAULT_REVISION,
    *,
    endpoint: str | None = None,
    token: str | None = None,
) -> tuple[str, list[RemoteFile]]:
    """Resolve `revision` to a commit and return (commit sha, the five files' size/sha256).

    Raises:
        WeightsFetchError: offline, unreachable, unknown repo/revision, or a file without LFS
            metadata (then its content could not be verified).
    """
    from huggingface_hub import HfApi

    where = f"{repo_id}@{revision} on {endpoint or 'the Hugging Face hub'}"
    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(
            repo_id, revision=revision, files_metadata=True
        )
    except Exception as exc:  # hub and network errors of many types become one line
        raise WeightsFetchError(f"cannot list {where}: {_one_line(exc)}") from exc
    siblings = {s.rfilename: s for s in info.siblings or []}
    files = []
    for path in HUB_FILES:
        sibling = siblings.get(path)
        if sibling is None:
            raise WeightsFetchError(f"{where} has no file {path}")
        if sibling.lfs is None:
            raise WeightsFetchError(f"{where}: {path} has no LFS sha256 to verify against")
        files.append(RemoteFile(path, int(sibling.lfs.size), str(sibling.lfs.sha256)))
    return str(info.sha), files


def fetch_weights(
    dest_dir: str | Path,
    repo_id: str = DEFAULT_REPO_ID,
    revision: str = DEFAULT_REVISION,
    *,
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """Download and verify the five LivePortrait files into dest_dir, then write the manifest.

    Files already present with the right size and sha256 are not downloaded again.

    Returns:
        The manifest path (dest_dir/DYNAMICS_WEIGHTS_MANIFEST.json).

    Raises:
        WeightsFetchError: see `list_remote_files`; or a download failed / did not verify.
    """
    from huggingface_hub import hf_hub_download

    dest_dir = Path(dest_dir)
    commit, files = list_remote_files(repo_id, revision, endpoint=endpoint, token=token)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for remote in files:
        target = dest_dir / remote.path
        if _matches(target, remote):
            logger.info("%s already present and verified", target)
            continue
        logger.info(
            "downloading %s (%d bytes) from %s@%s", remote.path, remote.size, repo_id, commit
        )
        try:
            hf_hub_download(
                repo_id,
                remote.path,
                revision=commit,
                local_dir=dest_dir,
                endpoint=endpoint,
                token=token,
                force_download=True,
            )
        except Exception as exc:  # one line for the operator
            raise WeightsFetchError(f"download of {remote.path} failed: {_one_line(exc)}") from exc
        if not _matches(target, remote):
            target.unlink(missing_ok=True)
            raise WeightsFetchError(
                f"{target}: downloaded file does not match the hub's size "
                f"{remote.size} / sha256 {remote.sha256}; removed it"
            )
    (dest_dir / RANDOM_MARKER).unlink(missing_ok=True)  # real weights now, not noise
    shutil.copyfile(default_config_path(), dest_dir / CONFIG_FILE)  # replaces any stale config
    return write_manifest(dest_dir, files, repo_id=repo_id, revision=revision, commit=commit)


def write_manifest(
    dest_dir: Path, files: list[RemoteFile], *, repo_id: str, revision: str, commit: str
) -> Path:
    """Write DYNAMICS_WEIGHTS_MANIFEST.json (atomically) listing size and sha256 per file."""
    manifest = {
        "repo_id": repo_id,
        "revision": revision,
        "commit": commit,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {f.path: {"size": f.size, "sha256": f.sha256} for f in files},
    }
    path = dest_dir / MANIFEST_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def file_sha256(path: Path) -> str:
    """Streaming sha256 of a file (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(path: Path, remote: RemoteFile) -> bool:
    return (
        path.is_file() and path.stat().st_size == remote.size and file_sha256(path) == remote.sha256
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
