"""The upstream LivePortrait reference fixture sets the tests compare against, and their sizes.

A fixture set is a folder made by upstream LivePortrait (tests/fixtures/liveportrait/README.md):
`checkpoints/`, `config.json` (the constructor config plus `image_size` and `crop_dsize`),
`modules.npz`, `geometry.npz`, `e2e_<scenario>.npz`, the driving templates and `manifest.json`.
Every size a test needs (network input, generated frame, crop, feature volume) comes from the
set's `config.json` through `FixtureSet`; no test states one set's numbers.

Which sets run: `LIVEPORTRAIT_FIXTURES=DIR` selects exactly that set; without it, every bundled set
(`BUNDLED_DIRS`: the 32/64 px "reduced-v2" set and the 64/128 px "reduced-128" set). The parity
tests take the `lp_set` fixture (tests/conftest.py), parametrized over the selected sets; tests
that only need some real upstream-format weights take `lp_primary` (module-level code:
`primary_set()`), the first selected set. Services started as subprocesses use `DEFAULT_SET`'s
checkpoints.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
DEFAULT_DIR = FIXTURES_DIR / "liveportrait"
BUNDLED_DIRS = (DEFAULT_DIR, FIXTURES_DIR / "liveportrait-128")
ENV_VAR = "LIVEPORTRAIT_FIXTURES"


@dataclass(frozen=True)
class FixtureSet:
    """One fixture folder and the sizes its `config.json` states."""

    path: Path
    config: dict[str, Any] = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def image_size(self) -> int:
        """Side of the networks' square input (F and M)."""
        return int(self.config["image_size"])

    @property
    def crop_dsize(self) -> int:
        """Side of the square face crop: crop geometry, the paste-back mask and M_c2o's domain."""
        return int(self.config["crop_dsize"])

    def _params(self, network: str) -> dict[str, Any]:
        return self.config["model_params"][f"{network}_params"]

    @property
    def feature_side(self) -> int:
        """Spatial side of F's feature volume (and of W's output) for an `image_size` input."""
        return self.image_size // 2 ** int(
            self._params("appearance_feature_extractor")["num_down_blocks"]
        )

    @property
    def feature_shape(self) -> tuple[int, int, int, int]:
        """f_s per sample: (reshape_channel, reshape_depth, side, side)."""
        f = self._params("appearance_feature_extractor")
        side = self.feature_side
        return int(f["reshape_channel"]), int(f["reshape_depth"]), side, side

    @property
    def warped_channels(self) -> int:
        """Channels of W's output, which G decodes."""
        w = self._params("warping_module")
        return int(w["block_expansion"]) * 2 ** int(w["num_down_blocks"])

    @property
    def output_size(self) -> int:
        """Side of the frame G generates from an `image_size` input."""
        g = self._params("spade_generator")
        return self.feature_side * 2 ** int(g["num_down_blocks"]) * max(1, int(g["upscale"]))

    @property
    def num_kp(self) -> int:
        return int(self._params("motion_extractor")["num_kp"])

    @functools.cached_property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text())

    def npz(self, name: str) -> dict[str, np.ndarray]:
        """All arrays of `<name>.npz` (e.g. "modules", "geometry", "e2e_cli_default"), read
        afresh on each call (callers may modify them)."""
        with np.load(self.path / f"{name}.npz") as data:
            return {key: data[key] for key in data.files}


@functools.cache
def fixture_set(path: str | Path) -> FixtureSet:
    """The set in `path` (relative paths: to the working directory, else to the repo root)."""
    folder = Path(path)
    if not folder.is_absolute() and not folder.exists():
        folder = REPO_ROOT / folder
    folder = folder.resolve()
    config_file = folder / "config.json"
    if not (folder / "manifest.json").is_file() or not config_file.is_file():
        raise FileNotFoundError(
            f"{ENV_VAR}={path}: {folder} holds no LivePortrait fixture set "
            "(manifest.json and config.json)"
        )
    config = json.loads(config_file.read_text())
    missing = [key for key in ("image_size", "crop_dsize", "model_params") if key not in config]
    if missing:
        raise ValueError(f"{config_file} lacks {missing}")
    return FixtureSet(folder, config)


def selected_sets() -> list[FixtureSet]:
    """The sets this run checks: `$LIVEPORTRAIT_FIXTURES` alone, else every bundled set."""
    chosen = os.environ.get(ENV_VAR)
    if chosen:
        return [fixture_set(chosen)]
    return [fixture_set(folder) for folder in BUNDLED_DIRS]


def primary_set() -> FixtureSet:
    """The first selected set: the one tests that are not parity checks run against."""
    return selected_sets()[0]


DEFAULT_SET = fixture_set(DEFAULT_DIR)
