"""`dynamics bench` table 4b: torch and ONNX Runtime rows in one run, on the fixture weights."""

from __future__ import annotations

from bench import animator_bench, tables
from bench.cost import load_prices
from services.animator.pipeline import cpu_has_bf16
from tests.unit.animator.ort_export_cache import primary_export


def test_backend_rows_measure_torch_and_onnxruntime(lp_primary, tmp_path):
    export = primary_export()  # the bench would export here; the suite's export is reused
    rows = animator_bench.backend_rows(
        lp_primary.checkpoints,
        2,
        2,
        "cpu",
        1,
        tmp_path,
        onnx_dir=export.folder,
        input_size=lp_primary.image_size,
    )
    expected = [("torch", "fp32")] + ([("torch", "bf16")] if cpu_has_bf16() else [])
    expected.append(("onnxruntime/CPUExecutionProvider", "fp32"))
    assert [(r["backend"], r["precision"]) for r in rows] == expected
    assert all(r["fps"] > 0 and r["batch"] == 2 and r["frames"] == 2 for r in rows)
    text = "\n".join(tables.render({"backends": rows}, "test-machine", load_prices()))
    assert "4b. Animator backends" in text and "[test-machine]" in text
    assert "onnxruntime/CPUExecutionProvider" in text and "export fp32" in text
