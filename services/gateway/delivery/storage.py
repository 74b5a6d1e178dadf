"""Where finished MP4s live: a local folder by default, or Firebase Storage.

Results are addressed by a key (`results/<job id>.mp4`). The app fetches them through the
gateway's `/v1/jobs/{id}/result`, which serves the file, streams the object, or redirects to a
signed URL when the credentials can sign one.

Firebase Storage calls are tried again only after a transient error (`is_transient`: HTTP 408,
429 and 5xx answers, connection failures, timeouts); a refusal such as 403 or 404 fails at once
with a `StorageError` whose `transient` is False.

Besides results, the storage keeps other objects under their own prefixes (the shared motion
cache's `motion-templates/`): `list_objects(prefix)` lists them with their size and when they
were last used, and `mark_used(key)` records a use (LocalStorage: the file's mtime; Firebase
Storage: the object's `dynamics-used-at` metadata, else its `updated` time).
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import stat as stat_mode
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import if_transient_error

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK = 1024 * 1024
# Firebase Storage: custom metadata field with the epoch seconds of an object's last use.
USED_AT_METADATA = "dynamics-used-at"


class StorageError(RuntimeError):
    """A storage call failed: refused (`transient` False, not retried), or a transient error
    that outlasted every attempt (`transient` True)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


# Statuses worth another try: request timeout, rate limit, and server-side failures.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_TYPES = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    http.client.IncompleteRead,
    http.client.RemoteDisconnected,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True when another try may succeed: google-api-core's transient errors
    (`if_transient_error`: 429, 500, 503, connection and auth-transport failures) plus 408,
    502, 504, timeouts and cut-off responses. Any other HTTP answer (400, 401, 403, 404, 409,
    412, ...) is a refusal that the same request would meet again."""
    if if_transient_error(exc) or isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return exc.code in TRANSIENT_STATUSES
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status in TRANSIENT_STATUSES  # google-resumable-media's InvalidResponse


@dataclass(frozen=True)
class StoredObject:
    """One object: its key, its size in bytes and when it was last used (epoch seconds)."""

    key: str
    size: int
    used_at: float


class ResultStorage(Protocol):
    """What the workers and the result route need from a storage backend."""

    local_path_supported: bool  # objects are files on this host (`local_path` works)

    def put(self, key: str, path: Path, content_type: str = "video/mp4") -> None: ...

    def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path | None: ...

    def signed_url(self, key: str, expires_s: int = 3600) -> str | None: ...

    def iter_bytes(self, key: str) -> Iterator[bytes]: ...

    def download(self, key: str, dest: Path) -> None: ...

    def delete(self, key: str) -> None: ...

    def stat(self, key: str) -> StoredObject | None: ...

    def list_objects(self, prefix: str) -> list[StoredObject]: ...

    def mark_used(self, key: str, at: float | None = None) -> None: ...


def result_key(job_id: str) -> str:
    return f"results/{job_id}.mp4"


def with_retries(
    action: Callable[[], T],
    what: str,
    attempts: int = 4,
    base_s: float = 0.5,
    retry_if: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run `action`; after an error that `retry_if` accepts, try again with exponential backoff
    (`attempts` tries in all). Raise StorageError at once for any other error, or after the
    last attempt."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if not retry_if(exc):
                raise StorageError(
                    f"{what} failed: {exc} (refused; not retried)", transient=False
                ) from exc
            if attempt == attempts:
                raise StorageError(
                    f"{what} failed after {attempts} attempts: {exc}", transient=True
                ) from exc
            delay = base_s * 2 ** (attempt - 1)
            logger.warning(
                "%s failed (attempt %d/%d), retrying in %.1fs: %s",
                what,
                attempt,
                attempts,
                delay,
                exc,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


class LocalStorage:
    """Results in a folder on the gateway's disk."""

    local_path_supported = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key escapes the storage folder: {key!r}")
        return path

    def put(self, key: str, path: Path, content_type: str = "video/mp4") -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(path, partial)
        partial.replace(target)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def signed_url(self, key: str, expires_s: int = 3600) -> str | None:
        return None

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        with self._path(key).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def download(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def stat(self, key: str) -> StoredObject | None:
        """The object's size and last use (its mtime), or None when there is none."""
        try:
            info = self._path(key).stat()
        except FileNotFoundError:
            return None
        if not stat_mode.S_ISREG(info.st_mode):
            return None
        return StoredObject(key, info.st_size, info.st_mtime)

    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with `prefix` (files being written are left out)."""
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.root.resolve()
        found = []
        for path in base.rglob("*"):
            key = path.relative_to(self.root.resolve()).as_posix()
            if not key.startswith(prefix) or key.endswith(".partial"):
                continue
            try:
                info = path.stat()
            except FileNotFoundError:  # deleted meanwhile
                continue
            if stat_mode.S_ISREG(info.st_mode):
                found.append(StoredObject(key, info.st_size, info.st_mtime))
        return found

    def mark_used(self, key: str, at: float | None = None) -> None:
        """Record a use at `at` (now by default) as the file's mtime; a missing file is fine."""
        when = time.time() if at is None else at
        try:
            os.utime(self._path(key), (when, when))
        except FileNotFoundError:
            pass


class FirebaseStorage:
    """Results in a Firebase Storage (Cloud Storage) bucket through firebase-admin.

    Against `gcp-storage-emulator` the google-cloud-storage client follows
    STORAGE_EMULATOR_HOST by itself; the App then carries anonymous credentials.
    """

    local_path_supported = False

    def __init__(
        self,
        app: object,
        bucket: str,
        attempts: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 60.0,
    ) -> None:
        from firebase_admin import storage

        self.bucket = storage.bucket(bucket, app=app)
        self.attempts = attempts
        self.backoff_s = backoff_s
        # The client library's own retry runs for up to two minutes per call; ours is bounded
        # (attempts x timeout plus backoff) and logs each failure.
        self._call = {"retry": None, "timeout": (10.0, timeout_s)}

    def _retry(self, action: Callable[[], T], what: str) -> T:
        return with_retries(action, what, self.attempts, self.backoff_s)

    def put(self, key: str, path: Path, content_type: str = "video/mp4") -> None:
        blob = self.bucket.blob(key)
        self._retry(
            lambda: blob.upload_from_filename(str(path), content_type=content_type, **self._call),
            f"upload of {key}",
        )

    def exists(self, key: str) -> bool:
        return bool(
            self._retry(lambda: self.bucket.blob(key).exists(**self._call), f"lookup of {key}")
        )

    def local_path(self, key: str) -> Path | None:
        return None

    def signed_url(self, key: str, expires_s: int = 3600) -> str | None:
        """A V4 signed URL, or None when the credentials cannot sign (emulator, anonymous)."""
        try:
            return self.bucket.blob(key).generate_signed_url(
                version="v4", expiration=expires_s, method="GET"
            )
        except Exception as exc:  # noqa: BLE001 - any signing failure means: stream instead
            logger.debug("cannot sign a URL for %s: %s", key, exc)
            return None

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks. Opening it and reading the first chunk are retried
        like any call; an error after the first chunk ends the stream with a StorageError."""
        blob = self.bucket.blob(key)

        def first_chunk():
            reader = blob.open("rb", chunk_size=CHUNK, **self._call)
            try:
                return reader, reader.read(CHUNK)
            except BaseException:
                reader.close()
                raise

        reader, chunk = self._retry(first_chunk, f"download of {key}")
        with reader:
            while chunk:
                yield chunk
                try:
                    chunk = reader.read(CHUNK)
                except Exception as exc:
                    raise StorageError(
                        f"download of {key} broke off: {exc}", transient=is_transient(exc)
                    ) from exc

    def download(self, key: str, dest: Path) -> None:
        blob = self.bucket.blob(key)
        self._retry(
            lambda: blob.download_to_filename(str(dest), **self._call), f"download of {key}"
        )

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self.bucket.blob(key).delete(**self._call)
        except NotFound:
            pass

    @staticmethod
    def _stored(blob) -> StoredObject:
        """A listed or fetched blob as a StoredObject: last use from the `dynamics-used-at`
        metadata, else the object's `updated` time (upload or last metadata change)."""
        used_at = None
        raw = (blob.metadata or {}).get(USED_AT_METADATA)
        if raw is not None:
            try:
                used_at = float(raw)
            except ValueError:
                used_at = None
        if used_at is None:
            used_at = blob.updated.timestamp() if blob.updated is not None else 0.0
        return StoredObject(blob.name, int(blob.size or 0), used_at)

    def stat(self, key: str) -> StoredObject | None:
        blob = self._retry(lambda: self.bucket.get_blob(key, **self._call), f"lookup of {key}")
        return None if blob is None else self._stored(blob)

    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Every object whose name starts with `prefix`, all pages (the whole listing is
        retried after a transient error)."""
        blobs = self._retry(
            lambda: list(self.bucket.list_blobs(prefix=prefix, **self._call)),
            f"listing of {prefix}",
        )
        return [self._stored(blob) for blob in blobs]

    def mark_used(self, key: str, at: float | None = None) -> None:
        """Record a use at `at` (now by default) in the object's metadata (one PATCH); an
        object that is gone meanwhile is fine."""
        from google.api_core.exceptions import NotFound

        when = time.time() if at is None else at

        def patch() -> None:
            blob = self.bucket.blob(key)
            blob.metadata = {USED_AT_METADATA: f"{when:.3f}"}
            try:
                blob.patch(**self._call)
            except NotFound:
                pass

        self._retry(patch, f"metadata update of {key}")
