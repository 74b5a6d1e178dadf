"""Motion-template cache: keys, round trip, damaged and hostile entries."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pytest
from dynamics.v1 import common_pb2

from services.gateway.pipeline.motion_cache import (
    FolderMotionCache,
    NullMotionCache,
    motion_cache_key,
)

SETTINGS = {"crop_driving_video": False, "driving_max_side": 1280, "rotation": 0}


def _template(frames: int = 3, num_kp: int = 21) -> common_pb2.MotionTemplate:
    template = common_pb2.MotionTemplate(num_kp=num_kp, model_version="m1")
    template.fps.num, template.fps.den = 30000, 1001
    for i in range(frames):
        template.frames.add(
            index=i,
            scale=1.0 + i,
            rotation=[float(v) for v in range(9)],
            expression=[0.01 * i] * num_kp * 3,
            translation=[0.0, 0.1, 0.2],
            ratios=common_pb2.FaceRatios(eye_left=0.3, eye_right=0.31, lip=0.05),
        )
    return template


def test_key_depends_on_video_settings_and_model() -> None:
    base = motion_cache_key("a" * 64, SETTINGS, "model-1")
    assert base == motion_cache_key("a" * 64, dict(reversed(SETTINGS.items())), "model-1")
    assert base != motion_cache_key("b" * 64, SETTINGS, "model-1")
    assert base != motion_cache_key("a" * 64, {**SETTINGS, "rotation": 90}, "model-1")
    assert base != motion_cache_key("a" * 64, SETTINGS, "model-2")
    assert len(base) == 64 and int(base, 16) >= 0


def test_round_trip_and_miss(tmp_path: Path) -> None:
    cache = FolderMotionCache(tmp_path)
    key = motion_cache_key("a" * 64, SETTINGS, "m1")
    assert cache.get(key) is None
    cache.put(key, _template())
    got = cache.get(key)
    assert got == _template()
    assert got.fps.num == 30000 and len(got.frames) == 3
    assert [p.name for p in tmp_path.rglob("*")] == [key[:2], f"{key}.motion"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "empty", "pickle", "no_frames"])
def test_damaged_entries_are_misses_and_removed(damage: str, tmp_path: Path) -> None:
    cache = FolderMotionCache(tmp_path)
    key = motion_cache_key("c" * 64, SETTINGS, "m1")
    cache.put(key, _template(frames=0 if damage == "no_frames" else 3))
    path = cache._path(key)
    blob = path.read_bytes()
    if damage == "flip":
        blob = blob[:-5] + bytes([blob[-5] ^ 0x40]) + blob[-4:]
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "magic":
        blob = b"X" + blob[1:]
    elif damage == "empty":
        blob = b""
    elif damage == "pickle":
        blob = pickle.dumps({"n_frames": 3, "motion": []})
    path.write_bytes(blob)
    assert cache.get(key) is None
    assert not path.exists()


def test_oversized_entries_are_not_read(tmp_path: Path) -> None:
    key = motion_cache_key("d" * 64, SETTINGS, "m1")
    FolderMotionCache(tmp_path).put(key, _template(frames=50))
    assert FolderMotionCache(tmp_path, max_entry_bytes=100).get(key) is None


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 64, "a" * 63, ""])
def test_keys_cannot_escape_the_folder(key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        FolderMotionCache(tmp_path).get(key)


def test_concurrent_writers_leave_one_whole_entry(tmp_path: Path) -> None:
    cache = FolderMotionCache(tmp_path)
    key = motion_cache_key("e" * 64, SETTINGS, "m1")
    threads = [
        threading.Thread(target=cache.put, args=(key, _template(frames=20))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get(key) == _template(frames=20)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_null_cache_never_hits() -> None:
    cache = NullMotionCache()
    cache.put("f" * 64, _template())
    assert cache.get("f" * 64) is None


def test_bucket_cache_round_trip_and_damage(tmp_path: Path) -> None:
    from services.gateway.delivery.storage import LocalStorage
    from services.gateway.pipeline.motion_cache import BucketMotionCache

    storage = LocalStorage(tmp_path / "bucket")
    cache = BucketMotionCache(storage)
    key = motion_cache_key("9" * 64, SETTINGS, "m1")
    assert cache.get(key) is None
    cache.put(key, _template())
    assert cache.get(key) == _template()
    name = f"motion-templates/{key}.motion"
    assert storage.exists(name)
    path = storage.local_path(name)
    path.write_bytes(path.read_bytes()[:-3])
    assert cache.get(key) is None and not storage.exists(name)
    cache.put(key, _template(frames=40))
    assert BucketMotionCache(storage, max_entry_bytes=200).get(key) is None
    with pytest.raises(ValueError):
        cache.get("../escape")
