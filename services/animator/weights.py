"""Strict loading of the upstream LivePortrait checkpoint files into our networks.

Like nanoGPT's `from_pretrained`: every file is read with `weights_only=True`, `module.`
prefixes are stripped, the key set and every shape are asserted (for the human config also
against `configs/state_dicts.json`), spectral norm is folded once, and the copy is strict.
Provenance: a `DYNAMICS_RANDOM_WEIGHTS.json` marker means "random" (output is noise), a
`DYNAMICS_WEIGHTS_MANIFEST.json` from `hub.fetch_weights` whose sizes and sha256 match means
"real", anything else is "unknown".

The model fingerprint (`model_fingerprint`) is the one identity of a loaded model: a sha256 over
the bytes of the five checkpoint files as read, the parsed architecture config and the network
input size. The animator reports it (`GetInfo`, every `Animate` reply, every motion template)
and the gateway keys its motion-template cache on it, so different weights or a different
config never share a template.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.animator.checkpoint_format import (
    BASE_FILES,
    CONFIG_FILE,
    MANIFEST_FILE,
    RANDOM_MARKER,
    STITCHING_FILE,
    STITCHING_KEYS,
    WeightFiles,
    WeightsError,
    disk_layout,
    fold_spectral_norm,
    locate_weight_files,
    spectral_conv_prefixes,
    strip_ddp_prefix,
)
from services.animator.model import (
    NAMED_CONFIGS,
    build_networks,
    default_config_path,
    load_models_config,
    named_config_path,
)

logger = logging.getLogger(__name__)

STATE_DICTS_JSON = Path(__file__).resolve().parent / "configs" / "state_dicts.json"
PROVENANCES = ("real", "random", "unknown")
DEFAULT_INPUT_SIZE = 256
WEIGHT_KEYS = ("F", "M", "W", "G", "S")  # the five checkpoint files
FINGERPRINT_HEX = 32  # hex characters of a model fingerprint (128 bits)


@dataclass
class LivePortraitModels:
    """The seven loaded networks (eval mode) plus what they were loaded from."""

    F: nn.Module  # appearance feature extractor
    M: nn.Module  # motion extractor
    W: nn.Module  # warping module
    G: nn.Module  # SPADE generator
    stitching: nn.Module  # S
    lip: nn.Module  # R_lip
    eye: nn.Module  # R_eye
    config: dict[str, Any]  # parsed models.yaml
    config_name: str  # packaged config name, the config file's path, or "inline"
    provenance: str  # "real" | "random" | "unknown"
    file_sha256: dict[str, str]  # 'F', 'M', 'W', 'G', 'S' -> sha256 of the bytes loaded
    input_size: int  # network input side (the config's image_size unless overridden)
    fingerprint: str  # model_fingerprint(file_sha256, config, input_size)
    weights_dir: Path
    layout: str  # "tree" | "flat"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def networks(self) -> dict[str, nn.Module]:
        """{'F', 'M', 'W', 'G', 'stitching', 'lip', 'eye'} -> module."""
        return {
            name: getattr(self, name) for name in ("F", "M", "W", "G", "stitching", "lip", "eye")
        }

    def param_counts(self) -> dict[str, int]:
        """Trainable parameter count per network (spectral norm folded: one weight per conv)."""
        return {
            name: sum(p.numel() for p in net.parameters()) for name, net in self.networks().items()
        }


def model_fingerprint(
    file_sha256: Mapping[str, str], config: Mapping[str, Any], input_size: int
) -> str:
    """The model's identity: sha256 over the five files' sha256, the parsed config and the
    input size (canonical JSON), as FINGERPRINT_HEX hex characters. Paths and the folder layout
    are not part of it: the same bytes in a flat folder or an upstream tree are the same model.

    Raises:
        ValueError: a checkpoint file's digest is missing.
    """
    missing = [key for key in WEIGHT_KEYS if key not in file_sha256]
    if missing:
        raise ValueError(
            f"model fingerprint needs the sha256 of every weight file; missing {missing}"
        )
    payload = json.dumps(
        {
            "files": {key: file_sha256[key] for key in WEIGHT_KEYS},
            "config": config,
            "input_size": int(input_size),
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:FINGERPRINT_HEX]


def load_models(
    weights_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: str | Path | dict[str, Any] | None = None,
    input_size: int | None = None,
) -> LivePortraitModels:
    """Load the five upstream checkpoint files strictly and return eval-mode networks.

    Args:
        weights_dir: upstream tree (`[liveportrait/]base_models/*.pth`,
            `retargeting_models/stitching_retargeting_module.pth`) or a flat folder of the files.
        device, dtype: where and in which float type the networks live.
        config: 'real' / 'reduced' (packaged configs), a models.yaml path or a parsed dict;
            default: `models.yaml` in the weights folder if present, else the packaged human
            config.
        input_size: the side the networks are fed; default the config's `image_size`, else
            256. Part of the fingerprint (motion extracted at another size is other motion).

    Raises:
        WeightsError: a missing/corrupt file, or a key/shape mismatch (names file and key).
        ModelConfigError: the config is unreadable or does not describe buildable networks.
    """
    found = locate_weight_files(weights_dir)
    cfg, config_name = _resolve_config(found, config)
    size = int(input_size or cfg.get("image_size", DEFAULT_INPUT_SIZE))
    nets = build_networks(cfg)
    check_json = cfg["model_params"] == load_models_config(default_config_path())["model_params"]
    digests: dict[str, str] = {}
    for key in BASE_FILES:
        state, digests[key] = read_checkpoint(found.files[key])
        _load_into(nets[key], state, found.files[key], check_json)
    bundle, digests["S"] = read_checkpoint(found.files["S"])
    _load_stitching(nets, bundle, found.files["S"], check_json)
    provenance = _provenance(found, digests)
    fingerprint = model_fingerprint(digests, cfg, size)
    device = torch.device(device)
    for net in nets.values():
        net.to(device=device, dtype=dtype).eval()
    logger.info(
        "loaded LivePortrait weights from %s (%s layout, config %s, provenance %s, fingerprint %s)",
        found.weights_dir,
        found.layout,
        config_name,
        provenance,
        fingerprint,
    )
    return LivePortraitModels(
        **nets,
        config=cfg,
        config_name=config_name,
        provenance=provenance,
        file_sha256=digests,
        input_size=size,
        fingerprint=fingerprint,
        weights_dir=found.weights_dir,
        layout=found.layout,
        device=device,
        dtype=dtype,
    )


def _resolve_config(
    found: WeightFiles, config: str | Path | dict | None
) -> tuple[dict[str, Any], str]:
    """(parsed config, its name: the packaged name, the file's path, or 'inline')."""
    if isinstance(config, dict):
        return config, "inline"
    if config in NAMED_CONFIGS:
        return load_models_config(named_config_path(config)), str(config)
    if config is not None:
        return load_models_config(config), str(config)
    for folder in (found.weights_dir, found.root):
        if (folder / CONFIG_FILE).is_file():
            return load_models_config(folder / CONFIG_FILE), str(folder / CONFIG_FILE)
    return load_models_config(default_config_path()), "real"


def read_checkpoint(path: Path) -> tuple[Any, str]:
    """torch.load(weights_only=True) of one file; returns (object, sha256 hex of the bytes).

    Raises:
        WeightsError: unreadable, truncated, or refused by the weights-only unpickler.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc})") from exc
    digest = hashlib.sha256(data).hexdigest()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refused by the weights-only loader (holds objects other than "
            f"tensors and plain containers; not a state dict or unsafe): "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # torch raises many types for corrupt archives
        raise WeightsError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    return obj, digest


def check_state_dict(
    state: Any, expected: dict[str, tuple[torch.Size, torch.dtype]], where: str
) -> None:
    """Assert that `state` has exactly the expected keys, shapes and dtype kinds, all finite."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise WeightsError(
            f"{where}: expected a state dict (str -> tensor), got {type(state).__name__}"
        )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise WeightsError(
            f"{where}: key mismatch: missing {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''} ({len(missing)}), unexpected "
            f"{unexpected[:5]}{' …' if len(unexpected) > 5 else ''} "
            f"({len(unexpected)})"
        )
    for key, (shape, dtype) in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{where}: '{key}' is a {type(value).__name__}, not a tensor")
        if value.shape != shape:
            raise WeightsError(
                f"{where}: '{key}' has shape {tuple(value.shape)}, expected {tuple(shape)}"
            )
        if value.dtype.is_floating_point != dtype.is_floating_point:
            raise WeightsError(f"{where}: '{key}' has dtype {value.dtype}, expected {dtype}")
        if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
            raise WeightsError(f"{where}: '{key}' contains NaN or inf")


@cache
def _json_layouts() -> dict[str, dict[str, list[int]]]:
    raw = json.loads(STATE_DICTS_JSON.read_text(encoding="utf-8"))
    out = {name: {e["key"]: e["shape"] for e in raw[name]["keys"]} for name in BASE_FILES.values()}
    for sub in STITCHING_KEYS.values():
        out[sub] = {e["key"]: e["shape"] for e in raw[STITCHING_FILE][sub]["keys"]}
    return out


def _check_against_json(state: dict, name: str, where: str) -> None:
    reference = _json_layouts()[name]
    got = {k: list(v.shape) for k, v in state.items()}
    if got != reference:
        diff = [k for k in dict.fromkeys([*reference, *got]) if got.get(k) != reference.get(k)]
        raise WeightsError(
            f"{where}: does not match the real model's layout "
            f"(state_dicts.json); first differing keys: {diff[:5]}"
        )


def _load_into(
    net: nn.Module, state: Any, path: Path, check_json: bool, json_name: str | None = None
) -> None:
    where = f"{path} [{json_name}]" if json_name else str(path)
    if isinstance(state, dict):
        state = strip_ddp_prefix(state)
    check_state_dict(state, disk_layout(net), where)
    if check_json:
        _check_against_json(state, json_name or path.name, where)
    state = fold_spectral_norm(state, spectral_conv_prefixes(net), where)
    net.load_state_dict(state, strict=True)


def _load_stitching(nets: dict[str, nn.Module], bundle: Any, path: Path, check_json: bool) -> None:
    if not isinstance(bundle, dict) or any(k not in bundle for k in STITCHING_KEYS.values()):
        got = list(bundle) if isinstance(bundle, dict) else type(bundle).__name__
        raise WeightsError(
            f"{path}: expected a dict with keys {list(STITCHING_KEYS.values())}, got {got}"
        )
    extra = [k for k in bundle if k not in STITCHING_KEYS.values()]
    if extra:
        logger.info("%s: ignoring extra top-level entries %s", path, extra)
    for name, sub in STITCHING_KEYS.items():
        _load_into(nets[name], bundle[sub], path, check_json, json_name=sub)


def _provenance(found: WeightFiles, digests: dict[str, str]) -> str:
    folders = dict.fromkeys((found.weights_dir, found.root))
    if any((folder / RANDOM_MARKER).is_file() for folder in folders):
        return "random"
    manifest_path = next(
        (f / MANIFEST_FILE for f in folders if (f / MANIFEST_FILE).is_file()), None
    )
    if manifest_path is None:
        return "unknown"
    try:
        listed = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{manifest_path}: unreadable weights manifest ({exc})") from exc
    base = manifest_path.parent
    for key, path in found.files.items():
        rel = path.relative_to(base).as_posix()
        entry = listed.get(rel)
        if not isinstance(entry, dict):
            raise WeightsError(f"{manifest_path}: lists no entry for {rel}")
        if path.stat().st_size != entry.get("size") or digests[key] != entry.get("sha256"):
            raise WeightsError(
                f"{path}: size/sha256 differ from {manifest_path} (file changed "
                "or corrupt; fetch again)"
            )
    return "real"
