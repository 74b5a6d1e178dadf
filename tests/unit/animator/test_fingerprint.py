"""The model fingerprint covers every checkpoint file the loader read, the architecture config
and the input size, and nothing about where the files lie."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from services.animator.checkpoint_format import BASE_FILES, STITCHING_FILE, flat_paths
from services.animator.weights import (
    FINGERPRINT_HEX,
    WEIGHT_KEYS,
    load_models,
    model_fingerprint,
    read_checkpoint,
)


@pytest.fixture
def weights(lp_primary, tmp_path) -> Path:
    """The fixture checkpoints (flat, with their models.yaml), copied so they can be edited."""
    dest = tmp_path / "weights"
    shutil.copytree(lp_primary.checkpoints, dest)
    return dest


def rewrite_one_tensor(path: Path) -> None:
    """Scale the first floating-point tensor of a checkpoint file by 1.01 (same keys, shapes)."""
    obj, _ = read_checkpoint(path)
    state = obj["retarget_mouth"] if path.name == STITCHING_FILE else obj
    key = next(k for k, v in state.items() if v.dtype.is_floating_point and v.abs().sum() > 0)
    state[key] = state[key] * 1.01
    torch.save(obj, path)


def test_fingerprint_is_over_the_bytes_of_all_five_files(weights):
    models = load_models(weights)
    files = flat_paths(weights)
    assert set(models.file_sha256) == set(WEIGHT_KEYS) == set(files)
    for key, path in files.items():
        assert models.file_sha256[key] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert models.fingerprint == model_fingerprint(
        models.file_sha256, models.config, models.input_size
    )
    assert len(models.fingerprint) == FINGERPRINT_HEX
    assert all(c in "0123456789abcdef" for c in models.fingerprint)


@pytest.mark.parametrize("name", [*BASE_FILES.values(), STITCHING_FILE])
def test_changing_any_weight_file_changes_the_fingerprint(weights, name):
    before = load_models(weights)
    rewrite_one_tensor(weights / name)
    after = load_models(weights)
    changed = [k for k in WEIGHT_KEYS if after.file_sha256[k] != before.file_sha256[k]]
    assert len(changed) == 1
    assert after.fingerprint != before.fingerprint


def test_the_config_and_input_size_are_part_of_the_fingerprint(weights, tmp_path, lp_primary):
    size = lp_primary.image_size
    base = load_models(weights, input_size=size)
    # The same config content from another path is the same model.
    elsewhere = tmp_path / "elsewhere.yaml"
    shutil.copy(weights / "models.yaml", elsewhere)
    same = load_models(weights, config=elsewhere, input_size=size)
    assert same.config_name == str(elsewhere) and same.fingerprint == base.fingerprint
    # A config that differs (here a stated image_size; the input size is held) is not.
    with open(weights / "models.yaml", "a", encoding="utf-8") as handle:
        handle.write(f"image_size: {size + 16}\n")
    edited = load_models(weights, input_size=size)
    assert edited.file_sha256 == base.file_sha256 and edited.input_size == size
    assert edited.fingerprint != base.fingerprint
    # The config's image_size becomes the input size when none is given.
    assert load_models(weights).input_size == size + 16
    assert load_models(weights, input_size=2 * size).fingerprint != edited.fingerprint


def test_a_missing_file_digest_is_refused():
    digests = {key: "0" * 64 for key in WEIGHT_KEYS if key != "S"}
    with pytest.raises(ValueError, match="missing \\['S'\\]"):
        model_fingerprint(digests, {"model_params": {}}, 256)
