"""Content-addressed cache of driving-motion templates (a hero video's motion, computed once).

The key is the sha256 of (trimmed-video sha256, crop/motion settings, model fingerprint), so a
change to any of them is a different entry. Entries are `MotionTemplate` protobufs, never
pickles: an entry holds a magic line, the sha256 of the payload, and the payload. A damaged,
foreign or too large entry reads as a miss and is removed. Writers never expose half an entry
(a temporary file renamed into place; an object upload), so concurrent writers of the same key
are harmless.

Two backends (`MOTION_CACHE_BACKEND`), both bounded by `MOTION_CACHE_MAX_BYTES`: each put
evicts the least recently used entries until the cache fits.

- `FolderMotionCache` (`folder`, the default): files on a local (or shared) disk under
  `MOTION_CACHE_DIR`, one cache per replica. A hit marks its entry used (its mtime); the entry
  just written is evicted last.
- `BucketMotionCache` (`storage`): objects `motion-templates/<key>.motion` in the result storage
  (the local results folder, or Firebase Storage), shared by every gateway replica. A hit marks
  its object used at most once an hour (LocalStorage: the mtime; Firebase Storage: the
  `dynamics-used-at` metadata, else the object's `updated` time); each put lists the prefix and
  never evicts the object just written (a template bigger than the whole bound is not stored).
  A storage error never fails a job: a failing read is a miss, a failing write, mark or
  eviction a WARNING.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
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


class StoredEntry(Protocol):
    """One object as the storage lists it (`delivery.storage.StoredObject`)."""

    @property
    def key(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def used_at(self) -> float: ...


class BlobStore(Protocol):
    """The part of the gateway's result storage (`delivery.storage`: LocalStorage,
    FirebaseStorage) a storage-backed cache uses. Defined here so the cache depends on what it
    calls, not on the storage classes."""

    def put(self, key: str, path: Path, content_type: str = ...) -> None: ...

    def stat(self, key: str) -> StoredEntry | None: ...

    def iter_bytes(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def list_objects(self, prefix: str) -> Sequence[StoredEntry]: ...

    def mark_used(self, key: str, at: float | None = ...) -> None: ...


class BucketMotionCache:
    """Templates as objects `<prefix><key>.motion` in the result storage (local folder or
    Firebase Storage), so every gateway replica shares them (`MOTION_CACHE_BACKEND=storage`).

    At most `max_bytes` of entries (None: unbounded): a hit marks its object used (at most once
    per `touch_every_s` per object, so hits rarely write), and each put lists the prefix and
    deletes the least recently used objects, never the one just written, until the rest fits.
    Replicas evicting at once may delete a little more than needed; that only costs a miss.
    A storage error never leaves the cache: a failing read is a miss, a failing write, touch or
    eviction a WARNING.
    """

    def __init__(
        self,
        store: BlobStore,
        prefix: str = "motion-templates/",
        max_entry_bytes: int = 256 * 1024 * 1024,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
        touch_every_s: float = 3600.0,
    ) -> None:
        self.store, self.prefix, self.max_entry_bytes = store, prefix, max_entry_bytes
        self.max_bytes = max_bytes  # None: unbounded
        self.clock = clock
        self.touch_every_s = touch_every_s
        self.evicted = 0
        self._entry_name = re.compile(re.escape(prefix) + r"[0-9a-f]{64}\.motion")
        self._evict_lock = threading.Lock()

    def _object(self, key: str) -> str:
        return f"{self.prefix}{_checked_key(key)}.motion"

    def get(self, key: str) -> common_pb2.MotionTemplate | None:
        """The stored template, or None on a miss, a storage error, or a damaged or too large
        object (which is deleted)."""
        name = self._object(key)
        try:
            info = self.store.stat(name)
            if info is None:
                return None
            blob = self._read(name) if info.size <= self.max_entry_bytes else None
        except Exception as exc:  # noqa: BLE001 - a storage error is a miss, never a failed job
            logger.warning("motion cache: could not read %s (a miss): %s", name, exc)
            return None
        template = None if blob is None else decode_entry(blob)
        if template is None:
            logger.warning("discarding motion cache object %s: damaged or too large", name)
            self._quietly(f"deleting {name}", lambda: self.store.delete(name))
            return None
        now = self.clock()
        if now - info.used_at >= self.touch_every_s:
            self._quietly(f"marking {name} used", lambda: self.store.mark_used(name, at=now))
        return template

    def _read(self, name: str) -> bytes | None:
        """The object's bytes, or None once they pass `max_entry_bytes`."""
        chunks, size = [], 0
        for chunk in self.store.iter_bytes(name):
            size += len(chunk)
            if size > self.max_entry_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def put(self, key: str, template: common_pb2.MotionTemplate) -> None:
        """Store `template` under `key`, then evict down to `max_bytes`."""
        name = self._object(key)
        blob = encode_entry(template)
        limit = self.max_entry_bytes
        if self.max_bytes is not None:
            limit = min(limit, self.max_bytes)
        if len(blob) > limit:
            logger.warning("motion template of %d bytes not cached (limit %d)", len(blob), limit)
            return
        try:
            with tempfile.TemporaryDirectory(prefix="motion-") as tmp:
                path = Path(tmp) / "entry.motion"
                path.write_bytes(blob)
                self.store.put(name, path, content_type="application/octet-stream")
        except Exception as exc:  # noqa: BLE001 - the job goes on without a cached template
            logger.warning("motion cache: could not store %s: %s", name, exc)
            return
        self._quietly(f"evicting under {self.prefix}", lambda: self._evict(keep=name))

    def _evict(self, keep: str) -> None:
        """Delete least recently used entries until those under the prefix hold at most
        `max_bytes`; `keep` (the entry just written) is never deleted."""
        if self.max_bytes is None:
            return
        with self._evict_lock:
            entries = [
                entry
                for entry in self.store.list_objects(self.prefix)
                if self._entry_name.fullmatch(entry.key)
            ]
            total = sum(entry.size for entry in entries)
            candidates = sorted(
                (entry for entry in entries if entry.key != keep),
                key=lambda entry: (entry.used_at, entry.key),
            )
            for entry in candidates:
                if total <= self.max_bytes:
                    break
                self.store.delete(entry.key)
                total -= entry.size
                self.evicted += 1
                logger.info("motion cache: evicted %s (%d bytes)", entry.key, entry.size)

    @staticmethod
    def _quietly(what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - the cache never fails a job
            logger.warning("motion cache: %s failed: %s", what, exc)
