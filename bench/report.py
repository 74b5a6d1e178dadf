"""Plain-text tables and a description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence


def machine_description() -> str:
    """One line naming the CPU (and GPU when torch sees one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f"; GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return desc


def format_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], note: str = ""
) -> str:
    """Render an aligned text table with a title line and an optional note below."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [
        max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
        for i, h in enumerate(headers)
    ]
    line = "  ".join("-" * w for w in widths)
    out = [title, line, "  ".join(str(h).ljust(w) for h, w in zip(headers, widths)), line]
    out += [
        "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths))
        for r in cells
    ]
    out.append(line)
    if note:
        out.append(note)
    return "\n".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.1f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.4f}"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "", 1).replace("-", "", 1).replace("$", "").isdigit()
