"""Table 7: cost per video and per month from measured device-seconds per job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")


@dataclass(frozen=True)
class CostRow:
    gpu: str
    basis: str  # "measured" on this run's device, or "estimate"
    gpu_seconds: float  # per video
    usd_per_video: float
    usd_per_month: dict[int, float]


def load_prices(path: Path | None = None) -> dict:
    """Read the price file (defaults: bench/prices.yaml) and check its fields."""
    data = yaml.safe_load((path or DEFAULT_PRICES).read_text())
    for name, gpu in data["gpus"].items():
        if gpu.get("price_per_hour", -1) < 0 or gpu.get("peak_tflops", 0) <= 0:
            raise ValueError(f"prices: GPU {name} needs price_per_hour >= 0 and peak_tflops > 0")
    return data


def cost_rows(
    frames_per_video: int, prices: dict, measured: dict[str, float] | None = None
) -> list[CostRow]:
    """One row per GPU: measured device-seconds per video where given, else the FLOP estimate."""
    measured = measured or {}
    rows = []
    for name, gpu in prices["gpus"].items():
        if name in measured:
            seconds, basis = measured[name], "measured"
        else:
            flops = frames_per_video * prices["tflop_per_frame"]
            seconds = flops / (gpu["peak_tflops"] * prices["utilisation"])
            basis = f"estimate ({prices['utilisation']:.0%} of peak)"
        per_video = seconds / 3600.0 * gpu["price_per_hour"]
        monthly = {n: per_video * n * prices["days_per_month"] for n in prices["videos_per_day"]}
        rows.append(CostRow(name, basis, seconds, per_video, monthly))
    return rows


def cost_table_rows(rows: list[CostRow]) -> tuple[list[str], list[list[object]]]:
    """Headers and cells for `format_table`."""
    per_day = list(rows[0].usd_per_month) if rows else []
    headers = ["GPU", "basis", "GPU-s/video", "$/video"] + [f"$/month @{n}/day" for n in per_day]
    cells = [
        [r.gpu, r.basis, r.gpu_seconds, f"${r.usd_per_video:.4f}"]
        + [f"${r.usd_per_month[n]:,.2f}" for n in per_day]
        for r in rows
    ]
    return headers, cells
