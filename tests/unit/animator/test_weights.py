"""Strict checkpoint loading: random-weights round trip, layouts, prefixes, precise errors,
refusal of malicious pickles, and the real-size config end to end (one frame on CPU)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from services.animator.checkpoint_format import (
    BASE_FILES,
    RANDOM_MARKER,
    STITCHING_FILE,
    WeightsError,
    tree_paths,
)
from services.animator.random_weights import write_random_weights
from services.animator.weights import load_models, read_checkpoint


@pytest.fixture(scope="module")
def reduced_dir(tmp_path_factory) -> Path:
    return write_random_weights(tmp_path_factory.mktemp("reduced"), "reduced", seed=7)


def _flat_copy(src_tree: Path, dest: Path) -> Path:
    """The five files of an upstream tree, copied flat (plus its models.yaml)."""
    dest.mkdir()
    for path in tree_paths(src_tree / "liveportrait").values():
        shutil.copy(path, dest / path.name)
    shutil.copy(src_tree / "models.yaml", dest / "models.yaml")
    return dest


@torch.no_grad()
def _outputs(models) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=gen)
    kp_s, kp_d = 0.3 * torch.randn(2, 1, 21, 3, generator=gen)
    f_s = models.F(x)
    out = models.W(f_s, kp_d, kp_s)
    return [
        f_s,
        *models.M(x).values(),
        out["out"],
        models.G(out["out"]),
        models.stitching(torch.randn(1, 126, generator=gen)),
    ]


def test_random_reduced_round_trip(reduced_dir):
    models = load_models(reduced_dir)
    assert models.provenance == "random" and models.layout == "tree"
    assert json.loads((reduced_dir / RANDOM_MARKER).read_text())["seed"] == 7
    assert all(not net.training for net in models.networks().values())
    bundle, _ = read_checkpoint(reduced_dir / "liveportrait/retargeting_models" / STITCHING_FILE)
    assert set(bundle) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    assert all(k.startswith("module.mlp.") for sub in bundle.values() for k in sub)
    g_state, _ = read_checkpoint(reduced_dir / "liveportrait/base_models/spade_generator.pth")
    assert "up_1.conv_s.weight_orig" in g_state and "up_1.conv_s.weight" not in g_state
    assert g_state["G_middle_0.norm_0.mlp_shared.0.weight"].std() > 0
    assert all(torch.isfinite(t).all() for t in _outputs(models))


def test_same_seed_same_bytes_other_seed_other_fingerprint(reduced_dir, tmp_path):
    again = load_models(write_random_weights(tmp_path / "a", "reduced", seed=7))
    other = load_models(write_random_weights(tmp_path / "b", "reduced", seed=8))
    assert again.fingerprint == load_models(reduced_dir).fingerprint
    assert other.fingerprint != again.fingerprint


def test_flat_and_tree_layouts_give_identical_networks(reduced_dir, tmp_path):
    tree = load_models(reduced_dir)
    flat = load_models(_flat_copy(reduced_dir, tmp_path / "flat"))
    assert flat.layout == "flat" and flat.provenance == "unknown"
    assert flat.fingerprint == tree.fingerprint
    for a, b in zip(_outputs(tree), _outputs(flat)):
        assert torch.equal(a, b)
    bare_tree = tmp_path / "bare"  # base_models/ directly, without the liveportrait/ level
    shutil.copytree(reduced_dir / "liveportrait", bare_tree)
    shutil.copy(reduced_dir / "models.yaml", bare_tree)
    assert load_models(bare_tree).layout == "tree"


def test_module_prefix_is_stripped_everywhere(reduced_dir, tmp_path):
    flat = _flat_copy(reduced_dir, tmp_path / "flat")
    state, _ = read_checkpoint(flat / BASE_FILES["F"])
    torch.save({f"module.{k}": v for k, v in state.items()}, flat / BASE_FILES["F"])
    bundle, _ = read_checkpoint(flat / STITCHING_FILE)
    bundle["retarget_eye"] = {
        k.removeprefix("module."): v for k, v in bundle["retarget_eye"].items()
    }
    torch.save(bundle, flat / STITCHING_FILE)
    models = load_models(flat)
    assert torch.equal(models.F.first.conv.weight, state["first.conv.weight"])


def test_models_yaml_in_folder_overrides_default(reduced_dir, tmp_path):
    flat = _flat_copy(reduced_dir, tmp_path / "flat")
    (flat / "models.yaml").unlink()
    with pytest.raises(WeightsError, match="appearance_feature_extractor.pth: key mismatch"):
        load_models(flat)  # the packaged human config does not fit reduced weights
    assert load_models(flat, config=reduced_dir / "models.yaml").param_counts()["F"] == 14736


def _break(flat: Path, name: str, edit) -> None:
    state, _ = read_checkpoint(flat / name)
    edit(state)
    torch.save(state, flat / name)


@pytest.mark.parametrize(
    "file, edit, match",
    [
        (
            BASE_FILES["W"],
            lambda s: s.pop("third.norm.running_var"),
            r"warping_module.pth: key mismatch: missing \['third.norm.running_var'\]",
        ),
        (
            BASE_FILES["M"],
            lambda s: s.update({"detector.head.weight": torch.zeros(2)}),
            (
                r"motion_extractor.pth: key mismatch: missing \[\] \(0\), unexpected "
                r"\['detector.head.weight'\]"
            ),
        ),
        (
            BASE_FILES["G"],
            lambda s: s.update({"fc.bias": torch.zeros(9)}),
            r"spade_generator.pth: 'fc.bias' has shape \(9,\), expected \(8,\)",
        ),
        (
            BASE_FILES["F"],
            lambda s: s["second.weight"].view(-1)[3].fill_(float("nan")),
            r"appearance_feature_extractor.pth: 'second.weight' contains NaN",
        ),
        (
            BASE_FILES["G"],
            lambda s: s["up_0.conv_1.weight_u"].neg_(),
            r"spade_generator.pth: spectral norm of 'up_0.conv_1'",
        ),
        (
            STITCHING_FILE,
            lambda s: s["retarget_mouth"].pop("module.mlp.6.bias"),
            r"stitching_retargeting_module.pth \[retarget_mouth\]: key mismatch: missing \['mlp.6.bias'\]",
        ),
        (STITCHING_FILE, lambda s: s.pop("retarget_eye"), r"expected a dict with keys"),
    ],
)
def test_mismatches_name_file_and_key(reduced_dir, tmp_path, file, edit, match):
    flat = _flat_copy(reduced_dir, tmp_path / "flat")
    _break(flat, file, edit)
    with pytest.raises(WeightsError, match=match):
        load_models(flat)


def test_missing_and_corrupt_files(reduced_dir, tmp_path):
    flat = _flat_copy(reduced_dir, tmp_path / "flat")
    (flat / BASE_FILES["M"]).unlink()
    with pytest.raises(WeightsError, match="missing .*motion_extractor.pth"):
        load_models(flat)
    shutil.copy(reduced_dir / "liveportrait/base_models" / BASE_FILES["M"], flat)
    data = (flat / BASE_FILES["W"]).read_bytes()
    (flat / BASE_FILES["W"]).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="warping_module.pth: not a readable PyTorch checkpoint"):
        load_models(flat)
    with pytest.raises(WeightsError, match="does not exist"):
        load_models(tmp_path / "nowhere")


class _Exploit:
    """Pickles to a call of os.system: what a weights_only load must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(reduced_dir, tmp_path):
    flat = _flat_copy(reduced_dir, tmp_path / "flat")
    marker = tmp_path / "pwned"
    state, _ = read_checkpoint(flat / BASE_FILES["F"])
    state["first.conv.bias"] = _Exploit(marker)
    torch.save(state, flat / BASE_FILES["F"])
    with pytest.raises(
        WeightsError, match="appearance_feature_extractor.pth: refused by the weights-only loader"
    ):
        load_models(flat)
    assert not marker.exists()


@torch.no_grad()
def test_real_size_random_weights_load_strictly_and_run_one_frame(tmp_path, repo_root):
    """Full human-model size: upstream format on disk, strict load (incl. state_dicts.json),
    then F, M and W+G for one 256×256 frame on CPU, all finite."""
    start = time.perf_counter()
    write_random_weights(tmp_path, "real", seed=0)
    models = load_models(tmp_path)
    assert models.provenance == "random"
    reference = json.loads((repo_root / "services/animator/configs/state_dicts.json").read_text())
    counts = models.param_counts()
    assert counts["G"] == reference["spade_generator.pth"]["n_parameters"]
    assert (
        sum(counts.values())
        == sum(reference[name]["n_parameters"] for name in BASE_FILES.values())
        + reference[STITCHING_FILE]["n_parameters_total"]
    )
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    f_s = models.F(x)
    heads = models.M(x)
    kp_s = 0.3 * torch.tanh(heads["kp"].view(1, 21, 3))
    warped = models.W(f_s, kp_s + 0.02, kp_s)
    image = models.G(warped["out"])
    assert f_s.shape == (1, 32, 16, 64, 64) and heads["pitch"].shape == (1, 66)
    assert warped["out"].shape == (1, 256, 64, 64) and image.shape == (1, 3, 512, 512)
    for tensor in (f_s, *heads.values(), *warped.values(), image):
        assert torch.isfinite(tensor).all()
    assert 0.0 < image.min() and image.max() < 1.0 and image.std() > 1e-3
    print(f"real-size write+load+frame: {time.perf_counter() - start:.1f} s")


def test_real_config_check_rejects_other_layouts(reduced_dir):
    from services.animator.weights import _check_against_json

    state, _ = read_checkpoint(reduced_dir / "liveportrait/base_models" / BASE_FILES["F"])
    with pytest.raises(
        WeightsError,
        match=r"state_dicts.json\); first differing keys: "
        r"\['first.conv.weight'",
    ):
        _check_against_json(state, BASE_FILES["F"], "F.pth")
