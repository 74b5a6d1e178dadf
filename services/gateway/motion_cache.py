"""Content-addressed cache of driving-motion templates (a hero video's motion, computed once).

The key is the sha256 of (trimmed-video sha256, crop/motion settings, model fingerprint), so a
change to any of them is a different entry. Entries are `MotionTemplate` protobufs, never
pickles: a file holds a magic line, the sha256 of the payload, and the payload. A damaged or
foreign file reads as a miss and is removed. Writes go to a temporary file renamed into place,
so readers never see half an entry and concurrent writers of the same key are harmless.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from dynamics.v1 import common_pb2
from google.protobuf.message import DecodeError

logger = logging.getLogger(__name__)

_MAGIC = b"DYNAMICS-MOTION-1\n"
_KEY = re.compile(r"^[0-9a-f]{64}$")
_FORMAT_VERSION = 1


def motion_cache_key(
    video_sha256: str, settings: Mapping[str, object], model_fingerprint: str
) -> str:
    """Cache key of one hero video's motion under the given settings and model."""
    payload = json.dumps(
        {
            "format": _FORMAT_VERSION,
            "video": video_sha256,
            "settings": dict(settings),
            "model": model_fingerprint,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class MotionCache(Protocol):
    """What the orchestrator needs from a template cache."""

    def get(self, key: str) -> common_pb2.MotionTemplate | None: ...

    def put(self, key: str, template: common_pb2.MotionTemplate) -> None: ...


class NullMotionCache:
    """A cache that never hits (caching disabled)."""

    def get(self, key: str) -> common_pb2.MotionTemplate | None:
        return None

    def put(self, key: str, template: common_pb2.MotionTemplate) -> None:
        return None


class FolderMotionCache:
    """Templates as files under `root/<key[:2]>/<key>.motion`."""

    def __init__(self, root: Path, max_entry_bytes: int = 256 * 1024 * 1024) -> None:
        self.root = Path(root)
        self.max_entry_bytes = max_entry_bytes

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"motion cache key must be 64 lowercase hex characters, got {key!r}")
        return self.root / key[:2] / f"{key}.motion"

    def get(self, key: str) -> common_pb2.MotionTemplate | None:
        """The stored template, or None on a miss or a damaged entry (which is removed)."""
        path = self._path(key)
        try:
            size = path.stat().st_size
            if size > self.max_entry_bytes:
                raise ValueError(f"entry is {size} bytes")
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._discard(path, str(exc))
            return None
        template = self._decode(blob)
        if template is None:
            self._discard(path, "bad magic, checksum or payload")
        return template

    @staticmethod
    def _decode(blob: bytes) -> common_pb2.MotionTemplate | None:
        head = len(_MAGIC) + 32
        if len(blob) < head or not blob.startswith(_MAGIC):
            return None
        digest, payload = blob[len(_MAGIC):head], blob[head:]
        if hashlib.sha256(payload).digest() != digest:
            return None
        template = common_pb2.MotionTemplate()
        try:
            template.ParseFromString(payload)
        except DecodeError:
            return None
        return template if len(template.frames) > 0 else None

    def put(self, key: str, template: common_pb2.MotionTemplate) -> None:
        """Store `template` under `key` atomically."""
        path = self._path(key)
        payload = template.SerializeToString()
        if len(payload) > self.max_entry_bytes:
            logger.warning("motion template of %d bytes not cached (limit %d)",
                           len(payload), self.max_entry_bytes)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".motion")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @staticmethod
    def _discard(path: Path, why: str) -> None:
        logger.warning("discarding motion cache entry %s: %s", path.name, why)
        path.unlink(missing_ok=True)
