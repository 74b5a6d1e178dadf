"""Content-addressed cache of driving-motion templates (a hero video's motion, computed once).

The key is the sha256 of (trimmed-video sha256, crop/motion settings, model fingerprint), so a
change to any of them is a different entry. Entries are `MotionTemplate` protobufs, never
pickles: a file holds a magic line, the sha256 of the payload, and the payload. A damaged or
foreign file reads as a miss and is removed. Writes go to a temporary file renamed into place,
so readers never see half an entry and concurrent writers of the same key are harmless.
`FolderMotionCache` keeps entries on a local (or shared) disk, at most `max_bytes` of them
(`MOTION_CACHE_MAX_BYTES`): a hit marks its entry used (its mtime), and each put evicts the
least recently used entries until the folder fits. `BucketMotionCache` keeps them in the result
storage (Firebase Storage in production), shared by every gateway replica.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
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


def encode_entry(template: common_pb2.MotionTemplate) -> bytes:
    """The stored form of a template: magic line, sha256 of the payload, payload."""
    payload = template.SerializeToString()
    return _MAGIC + hashlib.sha256(payload).digest() + payload


def decode_entry(blob: bytes) -> common_pb2.MotionTemplate | None:
    """The template in `blob`, or None when it is damaged, foreign or empty."""
    head = len(_MAGIC) + 32
    if len(blob) < head or not blob.startswith(_MAGIC):
        return None
    digest, payload = blob[len(_MAGIC) : head], blob[head:]
    if hashlib.sha256(payload).digest() != digest:
        return None
    template = common_pb2.MotionTemplate()
    try:
        template.ParseFromString(payload)
    except DecodeError:
        return None
    return template if len(template.frames) > 0 else None


def _checked_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"motion cache key must be 64 lowercase hex characters, got {key!r}")
    return key


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

    def __init__(
        self,
        root: Path,
        max_entry_bytes: int = 256 * 1024 * 1024,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.max_entry_bytes = max_entry_bytes
        self.max_bytes = max_bytes  # None: unbounded
        self.clock = clock
        self.evicted = 0
        self._evict_lock = threading.Lock()

    def _path(self, key: str) -> Path:
        _checked_key(key)
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
        template = decode_entry(blob)
        if template is None:
            self._discard(path, "bad magic, checksum or payload")
        else:
            self._touch(path)
        return template

    def _touch(self, path: Path) -> None:
        """Mark an entry used now: eviction takes the oldest mtime first."""
        now = self.clock()
        try:
            os.utime(path, (now, now))
        except OSError:  # evicted meanwhile by another process
            pass

    def _evict(self, keep: Path) -> None:
        """Remove least recently used entries until the folder holds at most `max_bytes`;
        the entry just written goes last."""
        if self.max_bytes is None:
            return
        with self._evict_lock:
            entries = []
            for path in self.root.glob("??/*.motion"):
                try:
                    stat = path.stat()
                except OSError:
                    continue
                entries.append((path == keep, stat.st_mtime, path, stat.st_size))
            total = sum(entry[3] for entry in entries)
            for _, _, path, size in sorted(entries, key=lambda e: (e[0], e[1])):
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size
                self.evicted += 1
                logger.info("motion cache: evicted %s (%d bytes)", path.name, size)

    def put(self, key: str, template: common_pb2.MotionTemplate) -> None:
        """Store `template` under `key` atomically."""
        path = self._path(key)
        blob = encode_entry(template)
        if len(blob) > self.max_entry_bytes:
            logger.warning(
                "motion template of %d bytes not cached (limit %d)", len(blob), self.max_entry_bytes
            )
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".motion")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._touch(path)
        self._evict(keep=path)

    @staticmethod
    def _discard(path: Path, why: str) -> None:
        logger.warning("discarding motion cache entry %s: %s", path.name, why)
        path.unlink(missing_ok=True)


class BlobStore(Protocol):
    """The part of the gateway's result storage a bucket-backed cache uses."""

    def put(self, key: str, path: Path, content_type: str = ...) -> None: ...

    def exists(self, key: str) -> bool: ...

    def iter_bytes(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...


class BucketMotionCache:
    """Templates as objects `<prefix><key>.motion` in the result storage (local folder or
    Firebase Storage), so every gateway replica shares them."""

    def __init__(
        self,
        store: BlobStore,
        prefix: str = "motion-templates/",
        max_entry_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.store, self.prefix, self.max_entry_bytes = store, prefix, max_entry_bytes

    def _object(self, key: str) -> str:
        return f"{self.prefix}{_checked_key(key)}.motion"

    def get(self, key: str) -> common_pb2.MotionTemplate | None:
        name = self._object(key)
        if not self.store.exists(name):
            return None
        chunks, size = [], 0
        for chunk in self.store.iter_bytes(name):
            size += len(chunk)
            if size > self.max_entry_bytes:
                break
            chunks.append(chunk)
        template = decode_entry(b"".join(chunks)) if size <= self.max_entry_bytes else None
        if template is None:
            logger.warning("discarding motion cache object %s: damaged or too large", name)
            self.store.delete(name)
        return template

    def put(self, key: str, template: common_pb2.MotionTemplate) -> None:
        blob = encode_entry(template)
        if len(blob) > self.max_entry_bytes:
            return
        with tempfile.TemporaryDirectory(prefix="motion-") as tmp:
            path = Path(tmp) / "entry.motion"
            path.write_bytes(blob)
            self.store.put(self._object(key), path, content_type="application/octet-stream")
