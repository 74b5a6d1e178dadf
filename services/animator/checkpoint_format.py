"""The upstream LivePortrait checkpoint format: file names, layouts, on-disk keys, spectral norm.

Shared by the strict loader (`weights.py`) and the random-weights writer (`random_weights.py`).
On disk, G's SPADE convs are spectral-norm triplets (`<conv>.weight_orig`, `.weight_u`,
`.weight_v`) instead of `<conv>.weight`; `fold_spectral_norm` turns a triplet into the plain
weight W_orig / sigma with sigma = u · (W_orig.reshape(out, -1) @ v), as torch does in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from services.animator.model.spade_generator import SPADEGenerator
from services.common.errors import DynamicsError

BASE_FILES = {
    "F": "appearance_feature_extractor.pth",
    "M": "motion_extractor.pth",
    "W": "warping_module.pth",
    "G": "spade_generator.pth",
}
STITCHING_FILE = "stitching_retargeting_module.pth"
STITCHING_KEYS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}
TREE_ROOT = "liveportrait"  # the hub repo (and upstream pretrained_weights/) keep files under it
BASE_DIR = "base_models"
RETARGETING_DIR = "retargeting_models"
CONFIG_FILE = "models.yaml"
RANDOM_MARKER = "DYNAMICS_RANDOM_WEIGHTS.json"
MANIFEST_FILE = "DYNAMICS_WEIGHTS_MANIFEST.json"
DDP_PREFIX = "module."


class WeightsError(DynamicsError):
    """Weights missing, unreadable, or not matching the architecture (names file and key)."""

    default_reason = "bad_weights"


@dataclass(frozen=True)
class WeightFiles:
    """Where the five checkpoint files of one weights folder are."""

    weights_dir: Path
    root: Path  # folder holding base_models/ (tree) or the .pth files (flat)
    layout: str  # "tree" or "flat"
    files: dict[str, Path]  # 'F', 'M', 'W', 'G', 'S' -> file

    def relative(self, key: str) -> str:
        """The file's path relative to weights_dir, '/'-separated (manifest key)."""
        return self.files[key].relative_to(self.weights_dir).as_posix()


def tree_paths(root: Path) -> dict[str, Path]:
    """Upstream layout: root/base_models/<net>.pth, root/retargeting_models/<stitching>.pth."""
    paths = {key: root / BASE_DIR / name for key, name in BASE_FILES.items()}
    paths["S"] = root / RETARGETING_DIR / STITCHING_FILE
    return paths


def flat_paths(root: Path) -> dict[str, Path]:
    """Flat layout: all five .pth files directly in root."""
    paths = {key: root / name for key, name in BASE_FILES.items()}
    paths["S"] = root / STITCHING_FILE
    return paths


def locate_weight_files(weights_dir: str | Path) -> WeightFiles:
    """Find the five files: `[liveportrait/]base_models/...` tree, or a flat folder.

    Raises:
        WeightsError: the folder does not exist, or some file of the detected layout is missing.
    """
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise WeightsError(f"weights folder {weights_dir} does not exist")
    for root in (weights_dir / TREE_ROOT, weights_dir):
        if (root / BASE_DIR).is_dir() or (root / RETARGETING_DIR).is_dir():
            return _checked(WeightFiles(weights_dir, root, "tree", tree_paths(root)))
    flat = flat_paths(weights_dir)
    if any(path.is_file() for path in flat.values()):
        return _checked(WeightFiles(weights_dir, weights_dir, "flat", flat))
    raise WeightsError(
        f"no LivePortrait weights in {weights_dir}: expected {TREE_ROOT}/{BASE_DIR}/*.pth and "
        f"{TREE_ROOT}/{RETARGETING_DIR}/{STITCHING_FILE} (upstream tree, '{TREE_ROOT}/' optional) "
        f"or the five .pth files directly in the folder; `dynamics weights fetch DIR` downloads "
        "them, `dynamics weights random DIR` writes random test weights"
    )


def _checked(found: WeightFiles) -> WeightFiles:
    missing = [str(path) for path in found.files.values() if not path.is_file()]
    if missing:
        raise WeightsError(
            f"incomplete LivePortrait weights ({found.layout} layout): missing "
            + ", ".join(missing)
        )
    return found


def spectral_conv_prefixes(net: nn.Module) -> list[str]:
    """State-dict prefixes of the convs that G stores as spectral-norm triplets."""
    if not isinstance(net, SPADEGenerator):
        return []
    return [
        f"{block_name}.{conv}"
        for block_name, block in net.spade_blocks().items()
        for conv in block.spectral_conv_names()
    ]


def disk_layout(net: nn.Module) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Expected on-disk keys (in upstream order) -> (shape, dtype) for a built network."""
    spectral = set(spectral_conv_prefixes(net))
    layout: dict[str, tuple[torch.Size, torch.dtype]] = {}
    state = net.state_dict()
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in spectral and leaf == "weight":
            if f"{prefix}.bias" not in state:  # bias-free conv_s: triplet in the weight's place
                _add_triplet(layout, prefix, tensor)
            continue  # with a bias, torch's spectral_norm re-registers the weight after it
        layout[key] = (tensor.shape, tensor.dtype)
        if prefix in spectral and leaf == "bias":
            _add_triplet(layout, prefix, state[f"{prefix}.weight"])
    return layout


def _add_triplet(layout: dict, prefix: str, weight: torch.Tensor) -> None:
    out_channels = weight.shape[0]
    layout[f"{prefix}.weight_orig"] = (weight.shape, weight.dtype)
    layout[f"{prefix}.weight_u"] = (torch.Size([out_channels]), weight.dtype)
    layout[f"{prefix}.weight_v"] = (torch.Size([weight[0].numel()]), weight.dtype)


def spectral_sigma(weight_orig: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sigma = u · (W_orig.reshape(out, -1) @ v), the eval-mode spectral-norm estimate."""
    return torch.dot(u, torch.mv(weight_orig.reshape(weight_orig.shape[0], -1), v))


def fold_spectral_norm(
    state: dict[str, torch.Tensor], prefixes: list[str], where: str
) -> dict[str, torch.Tensor]:
    """Replace every `<prefix>.weight_{orig,u,v}` triplet by `<prefix>.weight` = W_orig / sigma.

    Raises:
        WeightsError: sigma is not a positive finite number (corrupt u/v).
    """
    folded = dict(state)
    for prefix in prefixes:
        w_orig = folded.pop(f"{prefix}.weight_orig")
        u = folded.pop(f"{prefix}.weight_u")
        v = folded.pop(f"{prefix}.weight_v")
        sigma = spectral_sigma(w_orig.float(), u.float(), v.float())
        if not torch.isfinite(sigma) or sigma <= 0:
            raise WeightsError(
                f"{where}: spectral norm of '{prefix}' is {sigma.item()} "
                "(weight_u / weight_v corrupt)"
            )
        folded[f"{prefix}.weight"] = (w_orig.float() / sigma).to(w_orig.dtype)
    return folded


def strip_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop leading `module.` (DDP leftovers, as in the real stitching file) from every key."""
    out = {}
    for key, value in state.items():
        while key.startswith(DDP_PREFIX):
            key = key[len(DDP_PREFIX) :]
        out[key] = value
    return out
