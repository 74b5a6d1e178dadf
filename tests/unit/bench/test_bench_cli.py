"""`dynamics bench` end to end at a tiny width: all eight tables, the goals, valid JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from bench import cli, tables
from services.animator.pipeline import cpu_has_bf16
from services.cli.__main__ import main as dynamics_main

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, lp_primary) -> Path:
    """The primary fixture set's width and input size (its config.json): seconds, not minutes."""
    data = {"model_params": lp_primary.config["model_params"], "image_size": lp_primary.image_size}
    path = tmp_path_factory.mktemp("bench") / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.ffmpeg
@needs_ffmpeg
@pytest.mark.timeout(300)
def test_bench_prints_all_tables_and_goals(tiny_config, capsys):
    code = dynamics_main(
        [
            "bench",
            "--config",
            str(tiny_config),
            "--seconds",
            "0.4",
            "--fps",
            "10",
            "--batch-size",
            "2",
            "--batch-sizes",
            "1,2",
            "--batch-frames",
            "2",
            "--concurrency",
            "2",
            "--concurrent-seconds",
            "0.3",
            "--memory-seconds",
            "0.3,0.6",
            "--memory-fps",
            "10",
            "--fleet-jobs",
            "2",
            "--json",
            # the services' animator in bf16 where this CPU has it: that path end to end
            "--dtype",
            "bf16" if cpu_has_bf16() else "fp32",
        ]
    )
    out = capsys.readouterr().out
    assert code in (0, 1)
    for number in range(1, 9):
        assert f"\n{number}. " in "\n" + out, f"table {number} missing"
    results = json.loads(out.strip().splitlines()[-1])
    machine = results["machine"]
    assert machine and out.count(f"[{machine}]") >= 7
    assert results["dtype"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert out.count(f"[animator {results['dtype']}]") == 5  # tables 1-3, 6 and 8
    jobs = results["jobs"]
    assert jobs["pipelined"]["cache_hit"] is False and jobs["repeat"]["cache_hit"] is True
    assert jobs["sequential"]["sequential"] is True
    assert jobs["pipelined"]["frames"] == jobs["repeat"]["frames"] == 4
    for stage in ("fetch_trim", "detect", "motion", "animate", "encode", "upload", "total"):
        assert jobs["pipelined"]["timings"][stage] >= 0
    assert jobs["pipelined"]["device_seconds"] > 0
    first_cpu, repeat_cpu = jobs["pipelined"]["cpu_seconds"], jobs["repeat"]["cpu_seconds"]
    assert set(first_cpu) == {"face_detect", "animator", "encoder", "gateway"}
    assert first_cpu["animator"] > 0 and first_cpu["face_detect"] > 0
    # a cache hit skips tracking: face_detect only finds the source face
    assert repeat_cpu["face_detect"] <= first_cpu["face_detect"] + 0.02
    expected = [("fp32", 1), ("fp32", 2)] + ([("bf16", 1), ("bf16", 2)] if cpu_has_bf16() else [])
    assert [(r["precision"], r["batch"]) for r in results["batch"]] == expected
    assert all(r["fps"] > 0 for r in results["batch"])
    assert results["compare"]["max_pixel_diff"] <= 1
    assert results["concurrency"][0]["jobs"] == 2 and results["concurrency"][0]["frames"] == 6
    assert 0 < results["concurrency"][0]["busy_share"] <= 1.02  # device time counted once
    fleet = results["fleet"]  # table 8: the same jobs on 1, then 2 animators behind one target
    assert [(r["animators"], r["jobs"], r["slots"]) for r in fleet] == [(1, 2, 3), (2, 2, 6)]
    assert fleet[0]["animate_calls"] == [2, 0]  # one address: the second animator gets nothing
    assert sum(fleet[1]["animate_calls"]) == 2 and all(r["jobs_per_min"] > 0 for r in fleet)
    memory = results["service_memory"]
    assert [(m["clip_seconds"], m["frames"]) for m in memory] == [(0.3, 3), (0.6, 6)]
    assert all(
        m[f"{name}_mib"] > 10
        for m in memory
        for name in ("gateway", "encoder", "face_detect", "animator")
    )
    assert "Memory" in out
    assert len(results["goals"]) == 3
    assert code == (0 if all(g["result"] == "PASS" for g in results["goals"]) else 1)
    assert all(f"{g['result']}: {g['goal']}" in out for g in results["goals"])


def test_goals_from_ratios():
    jobs = {
        "pipelined": {"timings": {"total": 11.0, "animate": 10.0}},
        "sequential": {"timings": {"detect": 3.0, "animate": 9.0}},
        "repeat": {"timings": {"total": 7.0}},
    }
    goals = tables.goals({"jobs": jobs, "compare": {"plain_fps": 5.0, "batched_fps": 4.0}})
    assert [g["result"] for g in goals] == ["PASS", "FAIL", "FAIL"]
    assert goals[0]["ratio"] == 1.1 and goals[1]["ratio"] == round(7 / 11, 3)
    assert "generation alone (9.00 s) is slower" in goals[1]["note"]
    assert "generation-bound" in tables.render_goals(goals)
    jobs["sequential"]["timings"] = {"detect": 9.0, "animate": 3.0}
    assert "tracking-bound" in tables.goals({"jobs": jobs})[1]["note"]


def test_parser_rejects_unknown_section():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--skip", "everything"])
