"""The fleet: one PostgreSQL, two gateways, animators behind one DNS name, one face_detect and
one encoder, started once for the module (tests/fleet/fleet.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from services.cli.demo_media import write_hero_clip, write_source_photo
from tests.fleet.fleet import Fleet
from tests.postgres_fixture import postgres_server  # noqa: F401 - the session's cluster

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def fleet(postgres_server, tmp_path_factory) -> Iterator[Fleet]:  # noqa: F811
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), postgres_server.create_database())
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[bytes, bytes]:
    """A small photo and a 1 s hero clip (5 frames): cheap jobs, so the fleet test stays short."""
    folder = tmp_path_factory.mktemp("fleet-media")
    photo = write_source_photo(folder / "me.png", side=160).read_bytes()
    hero = write_hero_clip(folder / "hero.mp4", seconds=1.0, fps=5, size=128).read_bytes()
    return photo, hero
