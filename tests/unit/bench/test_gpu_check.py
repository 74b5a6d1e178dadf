"""bench/gpu_check.sh --dry-run: the GPU check's whole script on the CPU, in under 2 minutes."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from bench.gpu_check import gridsample_placement, markdown, placement_verdict

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
    (placement,) = result["gridsample"]
    assert placement["row"] == "cpu" and placement["runs_by_provider"] == {
        "CPUExecutionProvider": 2
    }
    assert placement["on_gpu"] is False
    assert result["job"]["frames"] == 25 and result["job"]["fps"] > 0
    text = (tmp_path / "gpu_check.md").read_text()
    assert text.startswith("# GPU check: DRY RUN") and "needs CUDA" in text
    assert "skipped" in (tmp_path / "gpu_tests.txt").read_text()  # gpu tests ran, and skipped
    # the install's split of the CUDA lock: every entry once, TensorRT's apart, hashes kept
    lock = (ROOT / "requirements" / "animator-gpu.txt").read_text()
    parts = {n: (tmp_path / f"lock-{n}.txt").read_text() for n in ("main", "tensorrt")}
    names = {n: re.findall(r"^([a-z0-9-]+)==", t, re.MULTILINE) for n, t in parts.items()}
    assert sorted(names["main"] + names["tensorrt"]) == re.findall(
        r"^([a-z0-9-]+)==", lock, re.MULTILINE
    )
    assert names["tensorrt"] and all(n.startswith("tensorrt") for n in names["tensorrt"])
    assert not any(n.startswith("tensorrt") for n in names["main"])
    assert "torch" in names["main"] and "onnxruntime-gpu" in names["main"]
    hashes = re.findall(r"--hash=sha256:[0-9a-f]{64}", lock)
    assert sorted(re.findall(r"--hash=sha256:[0-9a-f]{64}", "".join(parts.values()))) == sorted(
        hashes
    )


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


def test_placement_verdict_never_calls_the_cpu_provider_a_gpu_run():
    cuda = placement_verdict("CUDAExecutionProvider", {"CUDAExecutionProvider": 2})
    assert cuda["on_gpu"] is True and cuda["where"] == "CUDAExecutionProvider x2"
    # a TensorRT session that let one GridSample fall through to the CPU provider
    split = placement_verdict(
        "TensorrtExecutionProvider", {"CUDAExecutionProvider": 1, "CPUExecutionProvider": 1}
    )
    assert split["on_gpu"] is False
    # TensorRT built GridSample into its engine: no onnxruntime node ran it
    fused = placement_verdict("TensorrtExecutionProvider", {})
    assert fused["on_gpu"] is True and "TensorRT engine" in fused["where"]
    # a CUDA session whose profile shows no GridSample at all proves nothing
    assert placement_verdict("CUDAExecutionProvider", {})["on_gpu"] is False
    text = markdown(
        {
            "dry_run": False,
            "device": "x",
            "torch": "x",
            "cuda": "13.0",
            "config": "real",
            "input_size": 256,
            "notes": [],
            "torch_rows": [],
            "ort_rows": [],
            "gridsample": [{"row": "tensorrt", "providers": ["tensorrt", "cuda"], **fused}],
        }
    )
    assert "| tensorrt | tensorrt, cuda | TensorrtExecutionProvider | inside the TensorRT" in text
