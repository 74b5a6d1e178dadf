"""End to end: the three real services on loopback (fixture weights) + real FFmpeg, driven by
the orchestrator and by `dynamics render --json`. Small on purpose: a 1 s hero clip at 5 fps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from services.animator.onnx_export import export_onnx
from services.animator.random_weights import write_random_weights
from services.animator.weights import load_models
from services.cli.demo_media import write_hero_clip, write_source_photo
from services.cli.local_stack import LocalStack, StackConfig
from services.gateway.domain import (
    AnimationOptions,
    JobFailed,
    JobSpec,
    MediaInput,
    ProgressUpdate,
)
from services.gateway.net.fetch import FetchPolicy, MediaFetcher
from services.gateway.pipeline.clients import ServiceClients, ServiceTargets
from services.gateway.pipeline.media import probe_video
from services.gateway.pipeline.motion_cache import FolderMotionCache, NullMotionCache
from services.gateway.pipeline.orchestrator import Orchestrator, OrchestratorConfig
from services.gateway.pipeline.stages import RANDOM_WEIGHTS_COMMENT
from tests.fixture_set import DEFAULT_SET

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
]

FIXTURE_WEIGHTS = DEFAULT_SET.checkpoints  # the services run on the default fixture set
FPS, SECONDS = 5, 1.0
STACK_ENV = {"ANIMATOR_BATCH_SIZE": "2", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("e2e-media")
    blank = folder / "blank.png"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=gray:s=96x96",
            "-frames:v",
            "1",
            str(blank),
        ],
        check=True,
    )
    return {
        "source": write_source_photo(folder / "source.png", side=224),
        "hero": write_hero_clip(folder / "hero.mp4", seconds=SECONDS, fps=FPS, size=192),
        "blank": blank,
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    logs = tmp_path_factory.mktemp("stack-logs")
    stack = LocalStack(
        StackConfig(
            weights_dir=FIXTURE_WEIGHTS,
            env={**os.environ, **STACK_ENV},
            animator_device="cpu",
            log_dir=logs,
        )
    )
    stack.start()
    yield stack
    codes = stack.stop()
    assert codes == {"face_detect": 0, "animator": 0, "encoder": 0}


@pytest.fixture(scope="module")
def targets(stack: LocalStack) -> ServiceTargets:
    return stack.targets


def _frames_generated(stack: LocalStack) -> float:
    """animator_frames_total from the animator's /metrics."""
    port = stack.services["animator"].metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("animator_frames_total")
    )


@pytest.fixture(scope="module")
def fixture_model() -> str:
    """The fingerprint of the fixture weights, computed here, not asked of the animator."""
    return load_models(FIXTURE_WEIGHTS).fingerprint


@pytest.fixture()
def clients(targets: ServiceTargets):
    with ServiceClients(targets) as clients:
        yield clients


def _run(
    orchestrator: Orchestrator,
    media: dict[str, Path],
    work: Path,
    *,
    cancel: threading.Event | None = None,
    on_progress=None,
    source="source",
):
    spec = JobSpec(
        job_id=work.name,
        source=MediaInput(path=media[source]),
        driving=MediaInput(path=media["hero"]),
        seconds=SECONDS,
    )
    updates: list[ProgressUpdate] = []

    def record(update: ProgressUpdate) -> None:
        updates.append(update)
        if on_progress:
            on_progress(update)

    result = orchestrator.run(spec, work, on_progress=record, cancel=cancel or threading.Event())
    return result, updates


def _probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-of", "json", "-show_streams", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def _frames(path: Path) -> np.ndarray:
    streams = _probe(path)
    w, h = int(streams["video"]["width"]), int(streams["video"]["height"])
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def test_render_streams_progress_audio_and_reuses_motion(
    clients, media, fixture_model: str, tmp_path: Path
) -> None:
    cache = FolderMotionCache(tmp_path / "cache")
    orchestrator = Orchestrator(clients, cache, MediaFetcher(), OrchestratorConfig())
    first, updates = _run(orchestrator, media, tmp_path / "job1")
    assert not first.cache_hit and first.frames == int(FPS * SECONDS)
    streams = _probe(first.mp4_path)
    assert int(streams["video"]["nb_read_frames"]) == first.frames
    assert streams["audio"]["codec_name"] == "aac"
    assert (int(streams["video"]["width"]), int(streams["video"]["height"])) == (224, 224)
    for stage in ("fetch_trim", "detect", "motion", "animate", "encode"):
        assert first.timings[stage] > 0, stage
    done = [u.frames_done for u in updates]
    assert done == sorted(done) and done[-1] == first.frames
    assert any(u.stage == "animate" and 0 < u.frames_done < u.frames_total for u in updates)
    assert any(u.eta_seconds is not None and u.eta_seconds > 0 for u in updates)
    assert len(list((tmp_path / "cache").rglob("*.motion"))) == 1

    second, _ = _run(orchestrator, media, tmp_path / "job2")
    assert second.cache_hit and second.timings["motion"] == 0.0
    # Both name what animated them: the stack's animator runs torch fp32 on the CPU.
    assert (
        first.animator
        == second.animator
        == {"model": fixture_model, "backend": "torch", "device": "cpu", "dtype": "float32"}
    )
    assert second.frames == first.frames
    # On the hit the template's motion drives Animate; on the miss the crops did: same frames.
    diff = np.abs(_frames(first.mp4_path).astype(int) - _frames(second.mp4_path).astype(int))
    assert diff.mean() < 1.0


def test_an_onnxruntime_animator_is_named_in_the_result(
    media, fixture_model: str, tmp_path: Path
) -> None:
    """A stack whose animator runs ANIMATOR_BACKEND=onnxruntime (CPU provider, an export of the
    fixture weights): the job's result names that backend and provider, and the model."""
    export_onnx(FIXTURE_WEIGHTS, tmp_path / "onnx")
    stack = LocalStack(
        StackConfig(
            weights_dir=FIXTURE_WEIGHTS,
            env={**os.environ, **STACK_ENV},
            animator_device="cpu",
            log_dir=tmp_path / "logs",
            extra_env={
                "ANIMATOR_BACKEND": "onnxruntime",
                "ANIMATOR_ONNX_DIR": str(tmp_path / "onnx"),
                "ANIMATOR_ORT_PROVIDERS": "cpu",
            },
        )
    )
    stack.start()
    try:
        with ServiceClients(stack.targets) as clients:
            orchestrator = Orchestrator(clients, NullMotionCache(), MediaFetcher())
            result, _ = _run(orchestrator, media, tmp_path / "job")
    finally:
        codes = stack.stop()
    assert codes == {"face_detect": 0, "animator": 0, "encoder": 0}
    assert result.frames == int(FPS * SECONDS)
    assert result.animator == {
        "model": fixture_model,
        "backend": "onnxruntime/CPUExecutionProvider",
        "device": "cpu",
        "dtype": "float32",
    }


def test_sequential_mode_gives_the_same_frames(clients, media, tmp_path: Path) -> None:
    orchestrator = Orchestrator(clients, NullMotionCache(), MediaFetcher())
    pipelined, _ = _run(orchestrator, media, tmp_path / "p")
    one_by_one = Orchestrator(
        clients, NullMotionCache(), MediaFetcher(), OrchestratorConfig(sequential=True)
    )
    sequential, updates = _run(one_by_one, media, tmp_path / "s")
    assert sequential.frames == pipelined.frames and not sequential.cache_hit
    assert [u.stage for u in updates if u.stage in ("detect", "motion", "animate", "encode")][
        :1
    ] == ["detect"]
    assert "motion" in [u.stage for u in updates]
    diff = np.abs(
        _frames(pipelined.mp4_path).astype(int) - _frames(sequential.mp4_path).astype(int)
    )
    assert diff.mean() < 1.0


def test_cancel_stops_the_job_and_the_services(stack, clients, media, tmp_path: Path) -> None:
    long_hero = write_hero_clip(tmp_path / "long.mp4", seconds=4.0, fps=FPS, size=192)
    orchestrator = Orchestrator(clients, NullMotionCache(), MediaFetcher())
    cancel = threading.Event()

    def cancel_when_generating(update: ProgressUpdate) -> None:
        if update.stage == "animate" and update.frames_done >= 2:
            cancel.set()

    before = _frames_generated(stack)
    spec = JobSpec(
        job_id="cancel",
        source=MediaInput(path=media["source"]),
        driving=MediaInput(path=long_hero),
        seconds=4.0,
    )
    started = time.monotonic()
    with pytest.raises(JobFailed) as err:
        orchestrator.run(spec, tmp_path / "c", on_progress=cancel_when_generating, cancel=cancel)
    assert err.value.code == "cancelled" and not err.value.retryable
    assert time.monotonic() - started < 60
    time.sleep(2.0)  # anything the animator still did after the cancel would show by now
    assert _frames_generated(stack) - before < int(4.0 * FPS)
    assert clients.health() == {
        "face_detect": "SERVING",
        "animator": "SERVING",
        "encoder": "SERVING",
    }


def test_bad_inputs_fail_with_the_service_reason(clients, media, tmp_path: Path) -> None:
    orchestrator = Orchestrator(clients, NullMotionCache(), MediaFetcher())
    with pytest.raises(JobFailed) as err:
        _run(orchestrator, media, tmp_path / "noface", source="blank")
    assert err.value.code == "no_face" and not err.value.retryable
    audio_only = tmp_path / "tone.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", str(audio_only)],
        check=True,
    )
    spec = JobSpec(
        job_id="x", source=MediaInput(path=media["source"]), driving=MediaInput(path=audio_only)
    )
    with pytest.raises(JobFailed) as err:
        orchestrator.run(
            spec, tmp_path / "audio", on_progress=lambda u: None, cancel=threading.Event()
        )
    assert err.value.code == "no_video_stream"


def test_unreachable_services_fail_as_retryable(media, tmp_path: Path) -> None:
    closed = ServiceTargets("127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9")
    with ServiceClients(closed, max_attempts=2) as clients:
        orchestrator = Orchestrator(
            clients,
            NullMotionCache(),
            MediaFetcher(),
            OrchestratorConfig(unary_timeout_s=5, stream_timeout_s=5),
        )
        with pytest.raises(JobFailed) as err:
            _run(orchestrator, media, tmp_path / "down")
    assert err.value.retryable and err.value.code in ("service_unavailable", "timeout")


def test_dynamics_render_json(media, tmp_path: Path) -> None:
    """The CLI on freshly written random weights: it works, and says the video is noise."""
    out = tmp_path / "out.mp4"
    weights = write_random_weights(tmp_path / "weights", "reduced", seed=3)
    cmd = [
        sys.executable,
        "-m",
        "services.cli",
        "render",
        str(media["source"]),
        str(media["hero"]),
        "-o",
        str(out),
        "--weights",
        str(weights),
        "--seconds",
        str(SECONDS),
        "--json",
        "--device",
        "cpu",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **STACK_ENV},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cache_hit"] is False and report["frames"] == int(FPS * SECONDS)
    assert set(report["timings"]) >= {"fetch_trim", "detect", "motion", "animate", "encode"}
    assert 0 < report["timings"]["gpu_seconds"] <= report["timings"]["total"]
    assert "ETA" in done.stderr and out.stat().st_size > 0
    assert "audio" in _probe(out)
    assert report["random_weights"] is True and "output is noise" in done.stderr
    tags = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_format", "-of", "json", str(out)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["format"]["tags"]
    assert tags["comment"] == RANDOM_WEIGHTS_COMMENT


def test_url_inputs_go_through_the_fetcher(clients, media, tmp_path: Path) -> None:
    handler = partial(SimpleHTTPRequestHandler, directory=str(media["hero"].parent))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    spec = JobSpec(
        job_id="urls",
        source=MediaInput(url=f"{base}/source.png"),
        driving=MediaInput(url=f"{base}/hero.mp4"),
        seconds=SECONDS,
    )
    try:
        strict = Orchestrator(clients, NullMotionCache(), MediaFetcher())
        with pytest.raises(JobFailed) as err:
            strict.run(
                spec, tmp_path / "strict", on_progress=lambda u: None, cancel=threading.Event()
            )
        assert err.value.code == "url_refused" and not err.value.retryable
        trusting = Orchestrator(
            clients,
            NullMotionCache(),
            MediaFetcher(FetchPolicy(allow_http=True, trusted_networks=("127.0.0.1/32",))),
        )
        result = trusting.run(
            spec, tmp_path / "ok", on_progress=lambda u: None, cancel=threading.Event()
        )
        assert result.frames == int(FPS * SECONDS) and result.mp4_path.stat().st_size > 0
    finally:
        server.shutdown()
        server.server_close()


def test_paste_back_option_reaches_the_encoder(clients, media, tmp_path: Path) -> None:
    orchestrator = Orchestrator(clients, NullMotionCache(), MediaFetcher())
    spec = JobSpec(
        job_id="crop-only",
        source=MediaInput(path=media["source"]),
        driving=MediaInput(path=media["hero"]),
        seconds=SECONDS,
        options=AnimationOptions(paste_back=False, relative_motion=False, region="lip"),
    )
    result = orchestrator.run(
        spec, tmp_path / "crop", on_progress=lambda u: None, cancel=threading.Event()
    )
    video = _probe(result.mp4_path)["video"]
    # Without paste-back the MP4 holds the animator's face crops, not the 224 px photo canvas.
    assert (int(video["width"]), int(video["height"])) != (224, 224)
    assert int(video["width"]) == int(video["height"])


def test_phone_style_rotated_non_square_hero(clients, media, tmp_path: Path) -> None:
    """Pixels stored sideways with rotation metadata (as phones write them), 3:4 frame: the
    job runs through all services. (That decoded frames are upright is checked exactly against
    FFmpeg's autorotation in tests/unit/gateway/test_media.py; the tracker here would also
    follow an upside-down face.)"""
    sideways = tmp_path / "sideways.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(media["hero"]),
            "-vf",
            "pad=192:256:0:32,transpose=clock",
            "-c:v",
            "libx264",
            "-c:a",
            "copy",
            str(sideways),
        ],
        check=True,
    )
    phone = tmp_path / "phone.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(sideways),
            "-c",
            "copy",
            "-metadata:s:v",
            "rotate=90",
            str(phone),
        ],
        check=True,
    )
    info = probe_video(phone)
    assert (info.width, info.height) == (192, 256) and info.rotation in (90, 270)
    orchestrator = Orchestrator(clients, NullMotionCache(), MediaFetcher())
    spec = JobSpec(
        job_id="phone",
        source=MediaInput(path=media["source"]),
        driving=MediaInput(path=phone),
        seconds=SECONDS,
    )
    result = orchestrator.run(
        spec, tmp_path / "job", on_progress=lambda u: None, cancel=threading.Event()
    )
    assert result.frames == int(FPS * SECONDS)
