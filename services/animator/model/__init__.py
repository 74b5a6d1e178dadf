"""LivePortrait networks F, M, W, G and S, built from a models.yaml-style config.

`load_models_config(path)` reads a config in the upstream models.yaml layout (top-level
`model_params` with one `<network>_params` block per network); `build_networks(config)` builds
fresh (untrained) networks from it. Weights are loaded by `services.animator.weights`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from services.animator.model.appearance_feature_extractor import AppearanceFeatureExtractor
from services.animator.model.motion_extractor import MotionExtractor
from services.animator.model.spade_generator import SPADEGenerator
from services.animator.model.stitching_retargeting import StitchingRetargetingNetwork
from services.animator.model.warping_network import WarpingNetwork

__all__ = [
    "NAMED_CONFIGS",
    "NETWORK_NAMES",
    "AppearanceFeatureExtractor",
    "ModelConfigError",
    "MotionExtractor",
    "SPADEGenerator",
    "StitchingRetargetingNetwork",
    "WarpingNetwork",
    "build_networks",
    "default_config_path",
    "load_models_config",
    "named_config_path",
]

# network name -> (models.yaml block, class); stitching MLPs share one block with sub-blocks.
_BASE_NETWORKS: dict[str, tuple[str, type[nn.Module]]] = {
    "F": ("appearance_feature_extractor_params", AppearanceFeatureExtractor),
    "M": ("motion_extractor_params", MotionExtractor),
    "W": ("warping_module_params", WarpingNetwork),
    "G": ("spade_generator_params", SPADEGenerator),
}
STITCHING_BLOCK = "stitching_retargeting_module_params"
STITCHING_NETWORKS = ("stitching", "lip", "eye")
NETWORK_NAMES = (*_BASE_NETWORKS, *STITCHING_NETWORKS)


class ModelConfigError(ValueError):
    """A models.yaml-style config is missing a block or has an invalid hyper-parameter."""


_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
NAMED_CONFIGS = {
    "real": "models.yaml",
    "reduced": "models_reduced.yaml",
    "mid": "models_mid.yaml",
}


def default_config_path() -> Path:
    """The packaged human-model config (`services/animator/configs/models.yaml`)."""
    return _CONFIG_DIR / NAMED_CONFIGS["real"]


def named_config_path(name: str) -> Path:
    """Packaged config by name: 'real' (human model), 'mid' (CPU benchmarks) or 'reduced'
    (the fixtures' width)."""
    if name not in NAMED_CONFIGS:
        raise ModelConfigError(
            f"unknown model config {name!r}; choose one of "
            f"{sorted(NAMED_CONFIGS)} or give a models.yaml path"
        )
    return _CONFIG_DIR / NAMED_CONFIGS[name]


def load_models_config(path: str | Path | None = None) -> dict[str, Any]:
    """Parse and check a models.yaml (or config.json) with a top-level `model_params` block.

    Args:
        path: the file; None means the packaged human-model config.

    Returns:
        The parsed dict (as in the file, including `model_params`).

    Raises:
        ModelConfigError: unreadable file, or a missing/invalid block (message names the file).
    """
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelConfigError(f"cannot read model config {path}: {exc}") from exc
    try:
        _check_config(data)
    except ModelConfigError as exc:
        raise ModelConfigError(f"model config {path}: {exc}") from exc
    return data


def _check_config(data: Any) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("model_params"), dict):
        raise ModelConfigError("needs a top-level 'model_params' mapping")
    params = data["model_params"]
    for block, _ in _BASE_NETWORKS.values():
        if not isinstance(params.get(block), dict):
            raise ModelConfigError(f"model_params.{block} is missing or not a mapping")
    stitching = params.get(STITCHING_BLOCK)
    if not isinstance(stitching, dict):
        raise ModelConfigError(f"model_params.{STITCHING_BLOCK} is missing or not a mapping")
    for name in STITCHING_NETWORKS:
        sub = stitching.get(name)
        if not isinstance(sub, dict) or set(sub) != {"input_size", "hidden_sizes", "output_size"}:
            raise ModelConfigError(
                f"model_params.{STITCHING_BLOCK}.{name} needs exactly input_size, hidden_sizes, "
                "output_size"
            )


def _construct(name: str, cls: type[nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(f"cannot build network {name} ({cls.__name__}): {exc}") from exc


def build_networks(config: dict[str, Any]) -> dict[str, nn.Module]:
    """Build untrained networks from a parsed config, all in eval mode.

    Returns:
        {'F', 'M', 'W', 'G', 'stitching', 'lip', 'eye'} -> module (fp32, CPU, eval()).
    """
    _check_config(config)
    params = config["model_params"]
    nets: dict[str, nn.Module] = {}
    for name, (block, cls) in _BASE_NETWORKS.items():
        nets[name] = _construct(name, cls, dict(params[block]))
    for name in STITCHING_NETWORKS:
        nets[name] = _construct(
            name, StitchingRetargetingNetwork, dict(params[STITCHING_BLOCK][name])
        )
    for net in nets.values():
        net.eval()
    return nets
