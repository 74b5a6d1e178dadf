"""One ONNX export of the primary fixture set's weights per test process (the export is the slow
part: ~15 CPU seconds), shared by the ORT unit tests and the animator service e2e test."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from services.animator.onnx_export import OnnxExport, export_onnx
from tests.fixture_set import primary_set


@functools.cache
def primary_export() -> OnnxExport:
    """fp32, opset 20 export of the primary set's checkpoints at its image_size (temp folder,
    removed at exit)."""
    lp = primary_set()
    root = Path(tempfile.mkdtemp(prefix="dynamics-onnx-"))
    atexit.register(shutil.rmtree, root, True)
    return export_onnx(lp.checkpoints, root / "onnx", input_size=lp.image_size)
