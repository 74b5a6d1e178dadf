"""Project-wide pytest fixtures: repository paths and the LivePortrait reference fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LP_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "liveportrait"


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


@pytest.fixture(scope="session")
def lp_fixtures() -> Path:
    """Folder of upstream LivePortrait reference outputs (env LIVEPORTRAIT_FIXTURES overrides)."""
    path = Path(os.environ.get("LIVEPORTRAIT_FIXTURES", DEFAULT_LP_FIXTURES))
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"LIVEPORTRAIT_FIXTURES={path} holds no manifest.json")
    return path
