"""Seeded random LivePortrait weights, written in the exact upstream on-disk format.

Nothing can be downloaded on the test machines, so tests and local runs use these: the upstream
tree (`liveportrait/base_models/*.pth`, `liveportrait/retargeting_models/...pth`), bare state
dicts, spectral-norm triplets with power-iterated u/v, non-trivial BatchNorm statistics and a
stitching file whose sub-keys carry `module.`. A `DYNAMICS_RANDOM_WEIGHTS.json` marker makes the
loader report provenance "random": anything rendered from them is noise and is labelled so.
Weights are scaled (std 1/sqrt(fan_in), spectral norm 1) so the real-size forward stays finite.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from services.animator.checkpoint_format import (
    BASE_DIR,
    BASE_FILES,
    CONFIG_FILE,
    DDP_PREFIX,
    MANIFEST_FILE,
    RANDOM_MARKER,
    RETARGETING_DIR,
    STITCHING_KEYS,
    TREE_ROOT,
    WeightsError,
    disk_layout,
    tree_paths,
)
from services.animator.model import (
    NAMED_CONFIGS,
    build_networks,
    load_models_config,
    named_config_path,
)

logger = logging.getLogger(__name__)

POWER_ITERATIONS = 30


def write_random_weights(
    out_dir: str | Path, config: str | Path = "real", seed: int = 0, *, overwrite: bool = False
) -> Path:
    """Write seeded random weights for `config` into out_dir in the upstream tree layout.

    Args:
        out_dir: target folder (created); files go under `liveportrait/`.
        config: 'real' (human model, ~130 M parameters, ~520 MB), 'reduced' (the fixtures'
            width, ~1 M parameters) or a models.yaml path. The config is copied to
            `out_dir/models.yaml`, so the loader builds the matching architecture.
        seed: generator seed; the same seed and config give byte-identical tensors.
        overwrite: replace existing weight files (never a folder holding a real-weights manifest).

    Returns:
        out_dir as a Path.

    Raises:
        WeightsError: out_dir holds real weights, or files exist and overwrite is False.
    """
    out_dir = Path(out_dir)
    config_path = named_config_path(config) if config in NAMED_CONFIGS else Path(config)
    cfg = load_models_config(config_path)
    if (out_dir / MANIFEST_FILE).exists():
        raise WeightsError(
            f"{out_dir} holds fetched real weights ({MANIFEST_FILE}); "
            "write random weights elsewhere"
        )
    paths = tree_paths(out_dir / TREE_ROOT)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise WeightsError(f"weights already exist: {', '.join(existing)} (use overwrite)")
    (out_dir / TREE_ROOT / BASE_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / TREE_ROOT / RETARGETING_DIR).mkdir(parents=True, exist_ok=True)
    nets = build_networks(cfg)
    for index, key in enumerate(BASE_FILES):
        torch.save(random_state_dict(nets[key], _generator(seed, index)), paths[key])
    bundle = {}
    for index, (name, sub) in enumerate(STITCHING_KEYS.items(), start=len(BASE_FILES)):
        state = random_state_dict(nets[name], _generator(seed, index))
        bundle[sub] = {DDP_PREFIX + k: v for k, v in state.items()}
    torch.save(bundle, paths["S"])
    shutil.copyfile(config_path, out_dir / CONFIG_FILE)  # the folder describes itself
    marker = {
        "warning": "seeded RANDOM weights, not a trained model: every output is noise",
        "seed": seed,
        "config": str(config),
        "n_parameters": {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()},
        "files": [p.relative_to(out_dir).as_posix() for p in paths.values()],
    }
    (out_dir / RANDOM_MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    logger.info(
        "wrote random LivePortrait weights (config %s, seed %d) to %s", config, seed, out_dir
    )
    return out_dir


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1009 + index)


def random_state_dict(net: nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """On-disk state dict (upstream keys/order, spectral triplets) of random values for `net`."""
    state: dict[str, torch.Tensor] = {}
    for key, (shape, dtype) in disk_layout(net).items():
        if key.endswith((".weight_u", ".weight_v")):
            continue  # set together with their weight_orig
        state[key] = _random_tensor(key, shape, dtype, gen)
        if key.endswith(".weight_orig"):
            prefix = key[: -len("_orig")]
            state[prefix + "_u"], state[prefix + "_v"] = _power_iteration(state[key], gen)
    return state


def _random_tensor(
    key: str, shape: torch.Size, dtype: torch.dtype, gen: torch.Generator
) -> torch.Tensor:
    leaf = key.rpartition(".")[2]
    if leaf == "num_batches_tracked":
        return torch.randint(1, 100_000, (), generator=gen, dtype=dtype)
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=gen)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=gen)
    if key.endswith(("grn.gamma", "grn.beta")):
        return 0.1 * torch.randn(shape, generator=gen)
    if leaf == "bias":
        return 0.05 * torch.randn(shape, generator=gen)
    if len(shape) == 1:  # BatchNorm / LayerNorm scale
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    fan_in = shape[1:].numel()  # conv / linear weight (or spectral weight_orig)
    return torch.randn(shape, generator=gen) / fan_in**0.5


def _power_iteration(
    weight: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Converged (u, v) of W.reshape(out, -1), as a trained spectral-norm layer stores them."""
    mat = weight.reshape(weight.shape[0], -1).double()  # out×(in·kh·kw)
    v = torch.randn(mat.shape[1], generator=gen, dtype=torch.float64)  # in·kh·kw
    v = v / v.norm()
    u = mat @ v
    for _ in range(POWER_ITERATIONS):
        u = mat @ v  # out
        u = u / u.norm()
        v = mat.T @ u  # in·kh·kw
        v = v / v.norm()
    return u.float(), v.float()
