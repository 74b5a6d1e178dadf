"""bench/gpu_check.sh --dry-run: the GPU check's whole script on the CPU, in under 2 minutes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from bench.gpu_check import gridsample_placement, markdown

ROOT = Path(__file__).resolve().parents[3]


def test_dry_run_writes_both_reports(tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert wall < 150  # 2 minutes on an idle machine; margin for a shared CI box
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] is True and result["config"] == "reduced"
    eager = [r for r in result["torch_rows"] if r.get("mode") == "eager"]
    assert [r["batch"] for r in eager if r["precision"] == "fp32"] == [1, 2]
    assert all(r["fps"] > 0 for r in eager)
    assert {r["mode"]: r["skipped"] for r in result["torch_rows"] if "skipped" in r} == {
        "compile": "needs CUDA",
        "cudagraphs": "needs CUDA",
    }
    ort_cpu = [r for r in result["ort_rows"] if r.get("provider") == "cpu"]
    assert [r["batch"] for r in ort_cpu] == [1, 2] and all(r["fps"] > 0 for r in ort_cpu)
    assert result["gridsample"]["runs_by_provider"] == {"CPUExecutionProvider": 2}
    assert result["gridsample"]["on_gpu"] is False
    assert result["job"]["frames"] == 25 and result["job"]["fps"] > 0
    text = (tmp_path / "gpu_check.md").read_text()
    assert text.startswith("# GPU check: DRY RUN") and "needs CUDA" in text
    assert "skipped" in (tmp_path / "gpu_tests.txt").read_text()  # gpu tests ran, and skipped


def test_gridsample_placement_reads_ort_profiles(tmp_path):
    events = [
        {
            "cat": "Node",
            "name": "n1_kernel_time",
            "args": {"op_name": "GridSample", "provider": "CUDAExecutionProvider"},
        },
        {"cat": "Node", "name": "n1_fence_before", "args": {"op_name": "GridSample"}},
        {
            "cat": "Node",
            "name": "n2_kernel_time",
            "args": {"op_name": "GridSample", "provider": "CPUExecutionProvider"},
        },
        {
            "cat": "Node",
            "name": "n3_kernel_time",
            "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"},
        },
    ]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(events))
    assert gridsample_placement([str(path)]) == {
        "CUDAExecutionProvider": 1,
        "CPUExecutionProvider": 1,
    }


def test_markdown_marks_a_dry_run_and_every_reason():
    text = markdown(
        {
            "dry_run": True,
            "device": "cpu",
            "torch": "x",
            "cuda": None,
            "config": "reduced",
            "input_size": 32,
            "notes": ["n"],
            "torch_rows": [{"mode": "compile", "skipped": "needs CUDA"}],
            "ort_rows": [{"provider": "cuda", "error": "boom"}],
        }
    )
    assert "DRY RUN" in text and "needs CUDA" in text and "boom" in text
