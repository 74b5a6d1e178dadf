"""The storage-backed motion cache (MOTION_CACHE_BACKEND=storage): templates as objects
`motion-templates/<key>.motion` in the result storage, bounded by least-recently-used eviction.

Real storages throughout: LocalStorage on a temporary folder (with a fault injected by a small
subclass where a test needs a failing storage) and FirebaseStorage on gcp-storage-emulator.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest
from dynamics.v1 import common_pb2

from services.common.config import ConfigError
from services.gateway.config import GatewayConfig
from services.gateway.delivery.storage import FirebaseStorage, LocalStorage, StorageError
from services.gateway.pipeline.motion_cache import (
    BucketMotionCache,
    FolderMotionCache,
    encode_entry,
)
from services.gateway.runtime import motion_cache, real_orchestrator
from tests.unit.gateway.gateway_harness import PROJECT
from tests.unit.gateway.test_storage_notify import BUCKET, emulator, firebase_app  # noqa: F401

PREFIX = "motion-templates/"
HOUR = 3600.0
A, B, C = "a" * 64, "b" * 64, "c" * 64


def _template(frames: int = 50) -> common_pb2.MotionTemplate:
    template = common_pb2.MotionTemplate(num_kp=21, model_version="m1")
    for i in range(frames):
        template.frames.add(index=i, scale=1.0, expression=[0.01 * i] * 63)
    return template


ENTRY = len(encode_entry(_template()))  # bytes of one stored entry


def _name(key: str) -> str:
    return f"{PREFIX}{key}.motion"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _names(storage) -> set[str]:
    return {entry.key for entry in storage.list_objects(PREFIX)}


# -- LocalStorage ---------------------------------------------------------------------------


def test_local_storage_lists_marks_and_stats_objects(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "results")
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 10)
    for key in (_name(A), _name(B), "results/j1.mp4", "motion-templatesX/other"):
        storage.put(key, source)
    (storage.root / "motion-templates" / "half.motion.partial").write_bytes(b"y")
    assert _names(storage) == {_name(A), _name(B)}
    assert {e.key for e in storage.list_objects("motion-templates/a")} == {_name(A)}
    assert storage.list_objects("nothing-here/") == []
    storage.mark_used(_name(A), at=1_000_000.5)
    stat = storage.stat(_name(A))
    assert stat is not None and stat.size == 10
    assert stat.used_at == pytest.approx(1_000_000.5, abs=1e-3)
    listed = {e.key: e for e in storage.list_objects(PREFIX)}
    assert listed[_name(A)].used_at == pytest.approx(1_000_000.5, abs=1e-3)
    storage.mark_used(_name(C))  # gone meanwhile: nothing to mark, no error
    assert storage.stat(_name(C)) is None and storage.stat("motion-templates") is None
    with pytest.raises(ValueError):
        storage.list_objects("../")


def test_put_beyond_the_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "results")
    clock = Clock()
    cache = BucketMotionCache(storage, max_bytes=2 * ENTRY + ENTRY // 2, clock=clock)
    cache.put(A, _template())
    cache.put(B, _template())
    # A was written first but used more recently than B (both within the hour: no refresh)
    storage.mark_used(_name(A), at=clock.now - 100)
    storage.mark_used(_name(B), at=clock.now - 200)
    source = tmp_path / "result.mp4"
    source.write_bytes(b"r" * 10 * ENTRY)  # not a cache entry: neither counted nor evicted
    storage.put("results/j1.mp4", source)
    storage.put(f"{PREFIX}notes.txt", source)
    cache.put(C, _template())
    assert _names(storage) == {_name(A), _name(C), f"{PREFIX}notes.txt"}
    assert cache.evicted == 1 and storage.exists("results/j1.mp4")
    assert cache.get(A) == _template() and cache.get(C) == _template() and cache.get(B) is None
    assert sum(storage.stat(_name(k)).size for k in (A, C)) <= cache.max_bytes


def test_the_entry_just_written_survives_even_when_it_looks_oldest(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "results")
    cache = BucketMotionCache(storage, max_bytes=ENTRY + ENTRY // 2)
    cache.put(A, _template())
    storage.mark_used(_name(A), at=time.time() + 1000)  # A looks newer than anything written now
    cache.put(B, _template())
    assert _names(storage) == {_name(B)} and cache.evicted == 1


def test_an_entry_larger_than_the_whole_bound_is_not_stored(tmp_path: Path, caplog) -> None:
    storage = LocalStorage(tmp_path / "results")
    cache = BucketMotionCache(storage, max_bytes=ENTRY - 1)
    with caplog.at_level(logging.WARNING):
        cache.put(A, _template())
    assert _names(storage) == set() and "not cached" in caplog.text


def test_a_hit_refreshes_recency_only_when_older_than_an_hour(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "results")
    clock = Clock()
    cache = BucketMotionCache(storage, clock=clock)
    cache.put(A, _template())
    storage.mark_used(_name(A), at=clock.now - HOUR / 2)
    assert cache.get(A) == _template()
    assert storage.stat(_name(A)).used_at == pytest.approx(clock.now - HOUR / 2, abs=1e-3)
    storage.mark_used(_name(A), at=clock.now - HOUR - 1)
    assert cache.get(A) == _template()
    assert storage.stat(_name(A)).used_at == pytest.approx(clock.now, abs=1e-3)


@pytest.mark.parametrize("damage", ["truncate", "foreign", "too_large"])
def test_a_damaged_or_too_large_object_is_a_miss_and_deleted(damage: str, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "results")
    BucketMotionCache(storage).put(A, _template())
    path = storage.local_path(_name(A))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-7])
    elif damage == "foreign":
        path.write_bytes(b"not a motion template")
    cache = BucketMotionCache(
        storage, max_entry_bytes=ENTRY - 1 if damage == "too_large" else ENTRY
    )
    assert cache.get(A) is None
    assert not storage.exists(_name(A))


class FaultyStorage(LocalStorage):
    """A LocalStorage whose named calls raise StorageError (a storage outage)."""

    def __init__(self, root: Path, failing: set[str]) -> None:
        super().__init__(root)
        self.failing = failing
        for name in failing:
            setattr(self, name, self._fail)

    def _fail(self, *args, **kwargs):
        raise StorageError("storage unavailable (injected)", transient=True)


def test_a_failing_read_is_a_miss_and_keeps_the_object(tmp_path: Path, caplog) -> None:
    root = tmp_path / "results"
    BucketMotionCache(LocalStorage(root)).put(A, _template())
    for failing in ({"stat"}, {"iter_bytes"}):
        with caplog.at_level(logging.WARNING):
            assert BucketMotionCache(FaultyStorage(root, failing)).get(A) is None
        assert "could not read" in caplog.text
        assert LocalStorage(root).exists(_name(A))  # an outage is no reason to delete
        caplog.clear()


@pytest.mark.parametrize("failing", ["put", "list_objects", "delete"])
def test_a_failing_write_or_eviction_is_a_warning(failing: str, tmp_path: Path, caplog) -> None:
    root = tmp_path / "results"
    good = BucketMotionCache(LocalStorage(root))
    good.put(A, _template())
    cache = BucketMotionCache(FaultyStorage(root, {failing}), max_bytes=ENTRY + ENTRY // 2)
    with caplog.at_level(logging.WARNING):
        cache.put(B, _template())  # does not raise
    assert "failed" in caplog.text or "could not store" in caplog.text
    assert ("StorageError" in caplog.text) or ("injected" in caplog.text)
    assert good.get(B) == (None if failing == "put" else _template())
    assert good.get(A) == _template()  # the eviction that should have removed A did not run


def test_a_failing_mark_is_a_warning_and_still_a_hit(tmp_path: Path, caplog) -> None:
    root = tmp_path / "results"
    BucketMotionCache(LocalStorage(root)).put(A, _template())
    LocalStorage(root).mark_used(_name(A), at=time.time() - 2 * HOUR)
    cache = BucketMotionCache(FaultyStorage(root, {"mark_used"}))
    with caplog.at_level(logging.WARNING):
        assert cache.get(A) == _template()
    assert "marking" in caplog.text and "injected" in caplog.text


# -- FirebaseStorage on the emulator ---------------------------------------------------------


def test_firebase_lists_marks_and_deletes_objects(emulator, firebase_app, tmp_path):  # noqa: F811
    storage = FirebaseStorage(firebase_app, BUCKET, attempts=2, backoff_s=0.05)
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 123)
    before = time.time()
    for key in (_name(A), _name(B), "results/j1.mp4"):
        storage.put(key, source, content_type="application/octet-stream")
    listed = {entry.key: entry for entry in storage.list_objects(PREFIX)}
    assert set(listed) == {_name(A), _name(B)}
    assert {entry.size for entry in listed.values()} == {123}
    # no metadata yet: the last use is the object's `updated` time (its upload)
    assert all(before - 5 <= e.used_at <= time.time() + 5 for e in listed.values())
    storage.mark_used(_name(A), at=1_000_000.25)  # metadata patch
    assert storage.stat(_name(A)).used_at == pytest.approx(1_000_000.25)
    listed = {entry.key: entry for entry in storage.list_objects(PREFIX)}
    assert listed[_name(A)].used_at == pytest.approx(1_000_000.25)
    assert listed[_name(B)].used_at > 1_000_000.25
    storage.mark_used(_name(C))  # missing object: nothing to mark, no error
    assert storage.stat(_name(C)) is None
    storage.delete(_name(A))
    assert _names(storage) == {_name(B)} and storage.exists("results/j1.mp4")


def test_firebase_cache_evicts_the_least_recently_used(emulator, firebase_app):  # noqa: F811
    storage = FirebaseStorage(firebase_app, BUCKET, attempts=2, backoff_s=0.05)
    clock = Clock()
    cache = BucketMotionCache(storage, max_bytes=2 * ENTRY + ENTRY // 2, clock=clock)
    cache.put(A, _template())
    cache.put(B, _template())
    storage.mark_used(_name(A), at=clock.now - 100)
    storage.mark_used(_name(B), at=clock.now - 200)
    cache.put(C, _template())
    assert _names(storage) == {_name(A), _name(C)} and cache.evicted == 1
    assert cache.get(A) == _template() and cache.get(B) is None
    storage.mark_used(_name(A), at=clock.now - 2 * HOUR)
    assert cache.get(A) == _template()  # an old hit marks the object used now
    assert storage.stat(_name(A)).used_at == pytest.approx(clock.now, abs=0.01)


# -- settings and wiring ---------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    return {"GATEWAY_AUTH_MODE": "none", **extra}


def test_motion_cache_backend_setting() -> None:
    assert GatewayConfig.from_env(_env()).motion_cache_backend == "folder"
    for raw, want in (("folder", "folder"), ("storage", "storage"), (" Storage ", "storage")):
        config = GatewayConfig.from_env(_env(MOTION_CACHE_BACKEND=raw))
        assert config.motion_cache_backend == want
    with pytest.raises(ConfigError, match="MOTION_CACHE_BACKEND") as caught:
        GatewayConfig.from_env(_env(MOTION_CACHE_BACKEND="bucket"))
    assert caught.value.name == "MOTION_CACHE_BACKEND" and "folder, storage" in str(caught.value)


def test_runtime_builds_the_configured_cache(tmp_path: Path) -> None:
    config = GatewayConfig(auth_mode="none", data_dir=tmp_path, motion_cache_max_bytes=5 << 20)
    folder, close = motion_cache(config)
    assert isinstance(folder, FolderMotionCache) and folder.max_bytes == 5 << 20
    close()
    shared = replace(config, motion_cache_backend="storage")
    orchestrator, close = real_orchestrator(shared)
    try:
        cache = orchestrator.cache
        assert isinstance(cache, BucketMotionCache) and cache.max_bytes == 5 << 20
        assert isinstance(cache.store, LocalStorage) and cache.store.root == tmp_path / "results"
        cache.put(A, _template())
        assert (tmp_path / "results" / _name(A)).is_file()
    finally:
        close()


def test_runtime_shares_the_cache_through_firebase_storage(emulator, tmp_path):  # noqa: F811
    config = GatewayConfig(
        auth_mode="none",
        data_dir=tmp_path,
        firebase_project_id=PROJECT,
        firebase_credentials="anonymous",
        storage_backend="firebase",
        storage_bucket=BUCKET,
        motion_cache_backend="storage",
    )
    first, close_first = motion_cache(config)
    second, close_second = motion_cache(config)  # another replica
    try:
        assert isinstance(first, BucketMotionCache)
        assert isinstance(first.store, FirebaseStorage)
        first.put(A, _template())
        assert second.get(A) == _template()
    finally:
        close_first()
        close_second()
