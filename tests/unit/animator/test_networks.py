"""Networks F, M, W, G, S built from configs: shapes, config errors, batch independence."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from services.animator.model import (
    ModelConfigError,
    build_networks,
    default_config_path,
    load_models_config,
    named_config_path,
)
from services.animator.weights import load_models
from tests.fixture_set import DEFAULT_SET


@pytest.fixture(scope="module")
def reduced_cfg() -> dict:
    return load_models_config(named_config_path("reduced"))


@pytest.fixture(scope="module")
def fixture_models(lp_set):
    return load_models(lp_set.checkpoints, input_size=lp_set.image_size)


def test_reduced_config_is_the_default_fixture_config(reduced_cfg):
    """The packaged 'reduced' config is the one the bundled default fixture set was made with."""
    assert reduced_cfg["model_params"] == DEFAULT_SET.config["model_params"]


def test_fixture_checkpoint_config_is_its_config_json(lp_set):
    """Each set's checkpoints/models.yaml (what the loader reads) is its config.json's."""
    models_yaml = load_models_config(lp_set.checkpoints / "models.yaml")
    assert models_yaml["model_params"] == lp_set.config["model_params"]


def test_real_config_matches_the_real_checkpoint_sizes(repo_root):
    nets = build_networks(load_models_config(default_config_path()))
    ref = json.loads((repo_root / "services/animator/configs/state_dicts.json").read_text())
    files = {
        "F": "appearance_feature_extractor.pth",
        "M": "motion_extractor.pth",
        "W": "warping_module.pth",
        "G": "spade_generator.pth",
    }
    for name, file in files.items():
        assert sum(p.numel() for p in nets[name].parameters()) == ref[file]["n_parameters"]
    stitching = ref["stitching_retargeting_module.pth"]
    for name, sub in [
        ("stitching", "retarget_shoulder"),
        ("lip", "retarget_mouth"),
        ("eye", "retarget_eye"),
    ]:
        assert sum(p.numel() for p in nets[name].parameters()) == stitching[sub]["n_parameters"]


@torch.no_grad()
def test_shapes(lp_set):
    """Networks built from a fixture set's config give the shapes its sizes imply."""
    torch.manual_seed(0)
    nets = build_networks(lp_set.config)
    s, side, k = lp_set.image_size, lp_set.feature_side, lp_set.num_kp
    x = torch.rand(3, 3, s, s)
    f_s = nets["F"](x)
    assert f_s.shape == (3, *lp_set.feature_shape)
    heads = nets["M"](x)
    assert {k: tuple(v.shape) for k, v in heads.items()} == {
        "kp": (3, 3 * k),
        "scale": (3, 1),
        "pitch": (3, 66),
        "yaw": (3, 66),
        "roll": (3, 66),
        "t": (3, 3),
        "exp": (3, 3 * k),
    }
    kp_s, kp_d = 0.5 * torch.randn(3, k, 3), 0.5 * torch.randn(3, k, 3)
    warped = nets["W"](f_s, kp_d, kp_s)
    depth = lp_set.feature_shape[1]
    assert warped["out"].shape == (3, lp_set.warped_channels, side, side)
    assert warped["deformation"].shape == (3, depth, side, side, 3)
    assert warped["occlusion_map"].shape == (3, 1, side, side)
    image = nets["G"](warped["out"])
    assert image.shape == (3, 3, lp_set.output_size, lp_set.output_size)
    assert 0 < image.min() and image.max() < 1
    assert nets["stitching"](torch.randn(3, 6 * k)).shape == (3, 3 * k + 2)
    assert nets["lip"](torch.randn(3, 3 * k + 2)).shape == (3, 3 * k)
    assert nets["eye"](torch.randn(3, 3 * k + 3)).shape == (3, 3 * k)


@torch.no_grad()
def test_f_and_m_accept_other_input_sizes(lp_set):
    nets = build_networks(lp_set.config)
    x = torch.rand(1, 3, 2 * lp_set.image_size, 2 * lp_set.image_size)
    channels, depth, side, _ = lp_set.feature_shape
    assert nets["F"](x).shape == (1, channels, depth, 2 * side, 2 * side)
    assert nets["M"](x)["kp"].shape == (1, 3 * lp_set.num_kp)


def test_optional_variants(lp_set):
    cfg = copy.deepcopy(lp_set.config)
    cfg["model_params"]["warping_module_params"]["estimate_occlusion_map"] = False
    cfg["model_params"]["spade_generator_params"]["upscale"] = 1
    nets = build_networks(cfg)
    upscale = lp_set.config["model_params"]["spade_generator_params"]["upscale"]
    k, side = lp_set.num_kp, lp_set.output_size // upscale  # G without its pixel-shuffle upscale
    with torch.no_grad():
        out = nets["W"](
            torch.randn(1, *lp_set.feature_shape), torch.zeros(1, k, 3), torch.zeros(1, k, 3)
        )
        assert set(out) == {"out", "deformation"}
        assert nets["G"](out["out"]).shape == (1, 3, side, side)
    assert not any(k.startswith("dense_motion_network.occlusion") for k in nets["W"].state_dict())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda p: p.pop("warping_module_params"), "warping_module_params"),
        (lambda p: p["appearance_feature_extractor_params"].update(reshape_depth=5), "network F"),
        (lambda p: p["motion_extractor_params"].update(backbone="resnet50"), "backbone"),
        (lambda p: p["spade_generator_params"].update(colour=3), "network G"),
        (lambda p: p["stitching_retargeting_module_params"]["eye"].pop("hidden_sizes"), "eye"),
    ],
)
def test_config_errors_are_precise(reduced_cfg, mutate, match):
    cfg = copy.deepcopy(reduced_cfg)
    mutate(cfg["model_params"])
    with pytest.raises(ModelConfigError, match=match):
        build_networks(cfg)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("model_params: [1, 2]\n")
    with pytest.raises(ModelConfigError, match=re.escape(str(bad))):
        load_models_config(bad)
    with pytest.raises(ModelConfigError, match="unknown model config .huge."):
        named_config_path("huge")


@torch.no_grad()
def test_batch_independence(fixture_models, lp_set):
    """Batch-2 outputs equal two batch-1 runs (BN in eval; bound: twice what the manifest
    measured upstream)."""
    bound = 2 * max(lp_set.manifest["batch_independence_maxabs"].values())
    m, s, k, side = fixture_models, lp_set.image_size, lp_set.num_kp, lp_set.feature_side
    torch.manual_seed(1)
    x = torch.rand(2, 3, s, s)
    kp_s, kp_d = 0.4 * torch.randn(2, k, 3), 0.4 * torch.randn(2, k, 3)
    f_s = torch.randn(2, *lp_set.feature_shape)
    feature = torch.randn(2, lp_set.warped_channels, side, side)
    runs = {
        "F": lambda i: m.F(x[i]),
        "M": lambda i: torch.cat([v for _, v in sorted(m.M(x[i]).items())], 1),
        "W": lambda i: m.W(f_s[i], kp_d[i], kp_s[i])["out"],
        "G": lambda i: m.G(feature[i]),
    }
    for name, run in runs.items():
        both = run(slice(0, 2))
        single = torch.cat([run(slice(0, 1)), run(slice(1, 2))])
        assert (both - single).abs().max() <= bound, name


@torch.no_grad()
def test_warping_broadcasts_a_single_source_volume(fixture_models, lp_set):
    torch.manual_seed(2)
    f_s = torch.randn(1, *lp_set.feature_shape)
    kp_s = 0.4 * torch.randn(3, lp_set.num_kp, 3)
    kp_d = 0.4 * torch.randn(3, lp_set.num_kp, 3)
    broadcast = fixture_models.W(f_s, kp_d, kp_s)
    repeated = fixture_models.W(f_s.repeat(3, 1, 1, 1, 1), kp_d, kp_s)
    for key in ("out", "deformation", "occlusion_map"):
        assert torch.allclose(broadcast[key], repeated[key], atol=1e-6), key
