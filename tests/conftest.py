"""Project-wide pytest fixtures: repository paths and the LivePortrait reference fixture sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixture_set import FixtureSet, primary_set, selected_sets

REPO_ROOT = Path(__file__).resolve().parents[1]
SELECTED_SETS = selected_sets()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Skip `gpu`-marked tests cleanly when CUDA is absent."""
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def _set_ids(sets: list[FixtureSet]) -> list[str]:
    names = [s.name for s in sets]
    return names if len(set(names)) == len(names) else [s.path.name for s in sets]


@pytest.fixture(scope="module", params=SELECTED_SETS, ids=_set_ids(SELECTED_SETS))
def lp_set(request) -> FixtureSet:
    """Each selected upstream reference fixture set in turn (tests/fixture_set.py): both bundled
    sets by default, only $LIVEPORTRAIT_FIXTURES when given. Module scope keeps a module's tests
    together per set."""
    return request.param


@pytest.fixture(scope="session")
def lp_primary() -> FixtureSet:
    """The first selected fixture set, for tests that need real upstream-format weights and
    templates but are not parity checks (they run once, not once per set)."""
    return primary_set()


@pytest.fixture(scope="session")
def lp_fixtures(lp_primary) -> Path:
    """The primary fixture set's folder. Tests that need any size take `lp_primary` or `lp_set`,
    which read them from the set's config.json."""
    return lp_primary.path
