"""The benchmark's results → the seven titled tables, the memory tables and the goal checks."""

from __future__ import annotations

from bench.cost import cost_rows, cost_table_rows
from bench.report import format_table

STAGE_ROWS = ("fetch_trim", "detect", "motion", "animate", "encode", "upload", "total")

PIPELINED_LIMIT = 1.15
REPEAT_LIMIT = 0.6


def goals(results: dict) -> list[dict]:
    """The three CPU goals, each with its measured ratio and PASS/FAIL."""
    out = []
    jobs = results.get("jobs")
    if jobs:
        first = jobs["pipelined"]["timings"]
        ratio = first["total"] / first["animate"]
        out.append(_goal("pipelined wall <= 1.15 x its animate stage", ratio, PIPELINED_LIMIT))
        ratio = jobs["repeat"]["timings"]["total"] / first["total"]
        out.append(
            _goal(
                "repeat job <= 0.6 x first job",
                ratio,
                REPEAT_LIMIT,
                _repeat_note(jobs["sequential"]["timings"]),
            )
        )
    compare = results.get("compare")
    if compare:
        ratio = compare["plain_fps"] / compare["batched_fps"]
        out.append(_goal("batched animator >= per-frame loop (plain/batched fps <= 1)", ratio, 1.0))
    return out


def _repeat_note(sequential: dict) -> str:
    """Which stage bounds a cold job, from the sequential run (each stage alone)."""
    tracking, animate = sequential.get("detect", 0.0), sequential.get("animate", 0.0)
    if animate >= tracking:
        return (
            f"generation alone ({animate:.2f} s) is slower than detection + tracking alone "
            f"({tracking:.2f} s), so the first job is generation-bound and a cache hit, "
            "which skips only tracking and motion, cannot shorten it much; "
            "see docs/performance.md, table 3"
        )
    return (
        f"detection + tracking alone ({tracking:.2f} s) is slower than generation alone "
        f"({animate:.2f} s): the first job is tracking-bound, which a cache hit skips"
    )


def _goal(name: str, ratio: float, limit: float, note: str = "") -> dict:
    return {
        "goal": name,
        "ratio": round(ratio, 3),
        "limit": limit,
        "result": "PASS" if ratio <= limit else "FAIL",
        "note": note,
    }


def _precision_note(rows: list[dict]) -> str:
    measured = sorted({r["precision"] for r in rows})
    if any(str(r.get("device", "")).startswith("cuda") for r in rows):
        return f"precisions measured: {', '.join(measured)}."
    if "bf16" in measured:
        return "bf16: CPU autocast on native bf16 units (AVX512-BF16/AMX); fp16: CUDA only."
    return "fp16/bf16: not measured (fp16 needs CUDA, bf16 a CPU with AVX512-BF16/AMX)."


def render(results: dict, machine: str, prices: dict) -> list[str]:
    """Every available table as text, each naming the machine."""
    on = f"  [{machine}]"
    services_on = f"  [animator {results.get('dtype', 'fp32')}]{on}"  # the services' precision
    parts = []
    jobs = results.get("jobs")
    if jobs:
        parts += _job_tables(jobs, services_on)
    if "batch" in results:
        rows = [
            [r["precision"], r["batch"], r["fps"], r["ms_per_frame"], r["peak_mib"]]
            for r in results["batch"]
        ]
        basis = results["batch"][0]["memory_basis"] if results["batch"] else ""
        parts.append(
            format_table(
                "4. Animator frames/s by batch size and precision" + on,
                ["precision", "batch", "frames/s", "ms/frame", "peak memory MiB"],
                rows,
                f"memory: {basis}. " + _precision_note(results["batch"]),
            )
        )
    if results.get("backends"):
        rows = [
            [
                r["backend"],
                r["precision"] if r["backend"] == "torch" else "export fp32",
                r["batch"],
                r["fps"],
                r["ms_per_frame"],
                r["peak_mib"],
            ]
            for r in results["backends"]
        ]
        parts.append(
            format_table(
                "4b. Animator backends at the service batch size (same weights, one run)" + on,
                ["backend", "precision", "batch", "frames/s", "ms/frame", "peak memory MiB"],
                rows,
                "onnxruntime runs F, M and W+G of a `dynamics weights export-onnx` export; on a CPU "
                "it uses its own thread pool. GPU providers (CUDA, TensorRT): bench/gpu_check.sh.",
            )
        )
    if "compare" in results:
        c = results["compare"]
        parts.append(
            format_table(
                "5. Batched animator vs plain per-frame loop (same networks and weights)" + on,
                ["loop", "batch", "frames/s"],
                [
                    ["plain per-frame (upstream style)", 1, c["plain_fps"]],
                    ["AnimatorPipeline.generate", c["batch"], c["batched_fps"]],
                ],
                f"speed-up x{c['speedup']:.2f}; largest pixel difference {c['max_pixel_diff']}",
            )
        )
    if "concurrency" in results:
        rows = [
            [
                r["jobs"],
                r["frames"],
                r["wall"],
                r["frames_per_s"],
                r["jobs_per_min"],
                r["latency_p50"],
                r["latency_p95"],
                f"{r['busy_share']:.0%}",
                r["mean_batch"],
            ]
            for r in results["concurrency"]
        ]
        parts.append(
            format_table(
                "6. N concurrent jobs on one animator (motion from the cache)" + services_on,
                [
                    "jobs",
                    "frames",
                    "wall s",
                    "frames/s",
                    "jobs/min",
                    "p50 s",
                    "p95 s",
                    "animator busy",
                    "mean batch",
                ],
                rows,
            )
        )
    parts.append(_cost_table(results, prices, on))
    if results.get("fleet"):
        rows = [
            [
                r["animators"],
                r["slots"],
                r["jobs"],
                r["wall"],
                r["jobs_per_min"],
                " / ".join(f"{c:.0f}" for c in r["animate_calls"][: r["animators"]]),
            ]
            for r in results["fleet"]
        ]
        one, two = results["fleet"][0]["jobs_per_min"], results["fleet"][-1]["jobs_per_min"]
        parts.append(
            format_table(
                "8. Animators behind one target: 1 vs 2 (same run, motion from the cache)"
                + services_on,
                ["animators", "job slots", "jobs", "wall s", "jobs/min", "Animate calls each"],
                rows,
                f"2 animators: x{two / one:.2f} the jobs/min of 1; both share this machine's "
                "devices (on one CPU they share its cores)",
            )
        )
    if "service_memory" in results:
        rows = [
            [
                r["clip_seconds"],
                r["frames"],
                r["gateway_mib"],
                r["encoder_mib"],
                r["face_detect_mib"],
                r["animator_mib"],
            ]
            for r in results["service_memory"]
        ]
        parts.append(
            format_table(
                "Memory: peak resident set (VmHWM, MiB) of each process for one job" + on,
                ["clip s", "frames", "gateway", "encoder", "face_detect", "animator"],
                rows,
                "fresh processes per clip length; gateway = the orchestrator's process",
            )
        )
    return parts


def _job_tables(jobs: dict, on: str) -> list[str]:
    first, seq, rep = jobs["pipelined"], jobs["sequential"], jobs["repeat"]
    rows = [[s, first["timings"].get(s, 0.0)] for s in STAGE_ROWS]
    t1 = format_table(
        "1. Stage breakdown of one job (pipelined, motion-cache miss), seconds" + on,
        ["stage", "seconds"],
        rows,
        f"{first['frames']} frames; stages overlap, so they do not add up to the total; "
        f"animator device time {first['device_seconds']:.2f} s; upload = local storage copy",
    )
    ft, st = first["timings"], seq["timings"]
    t2 = format_table(
        "2. Pipelined vs --sequential, same job" + on,
        ["mode", "wall s", "animate stage s", "wall / animate stage"],
        [
            ["pipelined", ft["total"], ft["animate"], ft["total"] / ft["animate"]],
            ["sequential", st["total"], st["animate"], st["total"] / st["animate"]],
        ],
        f"pipelined wall / sequential animate stage (the animator with nothing else running): "
        f"{ft['total'] / st['animate']:.2f}; sequential / pipelined: "
        f"{st['total'] / ft['total']:.2f}",
    )
    t3 = format_table(
        "3. First job vs repeat job, same hero video (motion-template cache)" + on,
        [
            "job",
            "cache",
            "wall s",
            "detect s",
            "motion s",
            "animate s",
            "CPU s (all processes)",
            "face_detect CPU s",
        ],
        [
            [
                "first",
                "miss",
                ft["total"],
                ft.get("detect", 0.0),
                ft.get("motion", 0.0),
                ft["animate"],
                _cpu_total(first),
                _cpu(first, "face_detect"),
            ],
            [
                "repeat",
                "hit" if rep["cache_hit"] else "miss",
                rep["timings"]["total"],
                rep["timings"].get("detect", 0.0),
                rep["timings"].get("motion", 0.0),
                rep["timings"]["animate"],
                _cpu_total(rep),
                _cpu(rep, "face_detect"),
            ],
        ],
        f"repeat / first: wall {rep['timings']['total'] / ft['total']:.2f}, CPU seconds "
        f"{_ratio(_cpu_total(rep), _cpu_total(first))} (face_detect, animator, encoder with "
        f"FFmpeg, and the orchestrator's process)",
    )
    return [t1, t2, t3]


def _cpu(job: dict, name: str) -> float:
    return float(job.get("cpu_seconds", {}).get(name, 0.0))


def _cpu_total(job: dict) -> float:
    return float(sum(job.get("cpu_seconds", {}).values()))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def _cost_table(results: dict, prices: dict, on: str) -> str:
    measured = results.get("gpu_seconds_per_job", {})
    frames = results.get("cost_frames", 250)
    headers, cells = cost_table_rows(cost_rows(frames, prices, measured))
    jobs = results.get("jobs")
    note = f"{frames} frames per video (10 s at 25 fps); "
    if measured:
        note += f"measured device-seconds per job: {measured}"
    elif jobs:
        note += (
            f"no GPU here: GPU rows are estimates; this CPU's measured animator "
            f"device-seconds per job: {jobs['pipelined']['device_seconds']:.2f}"
        )
    return format_table("7. Cost per video and per month" + on, headers, cells, note)


def render_goals(goal_rows: list[dict]) -> str:
    return "\n".join(
        f"{g['result']}: {g['goal']} (measured {g['ratio']}, limit {g['limit']})"
        + (f"\n      {g['note']}" if g.get("note") else "")
        for g in goal_rows
    )
