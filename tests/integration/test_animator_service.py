"""AnimatorService over a real gRPC server on loopback (port 0) with the fixture weights."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from dynamics.v1 import animator_pb2, animator_pb2_grpc, common_pb2

from services.animator import metrics, templates
from services.animator.motion_types import MotionOptions
from services.animator.pipeline import AnimatorPipeline, Ratios
from services.animator.servicer import SERVICE_NAME, AnimatorServicer, add_to_server
from services.animator.weights import load_models
from services.common.errors import REASON_METADATA_KEY
from services.common.grpc_client import check_health, make_channel
from services.common.grpc_server import GrpcService
from services.common.media import array_to_raw, raw_to_array
from tests.fixture_set import primary_set

RATIOS = common_pb2.FaceRatios(eye_left=0.3, eye_right=0.28, lip=0.05)


def _noise(seed: int, side: int = primary_set().crop_dsize) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _batches_observed() -> float:
    samples = metrics.BATCH_SIZE.collect()[0].samples
    return next(x.value for x in samples if x.name == "animator_batch_size_count")


@pytest.fixture(scope="module")
def pipeline(lp_primary) -> AnimatorPipeline:
    return AnimatorPipeline.from_weights(
        lp_primary.checkpoints, input_size=lp_primary.image_size, batch_size=2
    )


@pytest.fixture(scope="module")
def served(pipeline):
    servicer = AnimatorServicer(max_frames=50, queue_frames=4)
    service = GrpcService(
        name="animator-test",
        service_names=[SERVICE_NAME],
        register=lambda server: add_to_server(servicer, server),
        port=0,
        metrics_port=None,
        grace_s=5.0,
    )
    port = service.start()
    channel = make_channel(f"127.0.0.1:{port}")
    before = check_health(channel, SERVICE_NAME)
    servicer.attach(pipeline)
    service.set_serving()
    yield animator_pb2_grpc.AnimatorServiceStub(channel), channel, before
    channel.close()
    service.stop(0)


def test_health_flips_after_load(served):
    _, channel, before = served
    assert before == "NOT_SERVING"
    assert check_health(channel, SERVICE_NAME) == "SERVING"


def test_animate_streams_frames_in_order(served, pipeline, lp_primary):
    stub = served[0]
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    frames = tpl.frames + tpl.frames[:2]  # 5 frames: batches of 2, 2, 1
    source = _noise(1)
    setup = animator_pb2.AnimateSetup(
        source_crop=array_to_raw(source),
        source_ratios=RATIOS,
        total_frames=len(frames),
        job_id="it",
    )
    requests = [animator_pb2.AnimateRequest(setup=setup)]
    requests += [animator_pb2.AnimateRequest(motion=templates.frame_to_proto(f)) for f in frames]
    frames_before, batches_before = metrics.FRAMES._value.get(), _batches_observed()
    replies = list(stub.Animate(iter(requests), timeout=120))
    assert [r.frame.index for r in replies] == list(range(len(frames)))
    assert metrics.FRAMES._value.get() - frames_before == len(frames)
    assert _batches_observed() - batches_before == 3  # batch size 2: 2 + 2 + 1
    assert [r.progress.done for r in replies] == list(range(1, len(frames) + 1))
    assert all(r.progress.total == len(frames) and not r.random_weights for r in replies)
    state = pipeline.prepare_source(source, Ratios(0.3, 0.28, 0.05), MotionOptions())
    expected = list(pipeline.generate(state, frames, 0))
    for reply, image in zip(replies, expected, strict=True):
        got = raw_to_array(reply.frame.image)
        assert got.shape == (lp_primary.output_size, lp_primary.output_size, 3)
        assert np.abs(got.astype(np.int16) - image.astype(np.int16)).max() <= 1


def test_animate_from_crops_matches_extract_motion(served):
    stub = served[0]
    crops = [_noise(10 + i) for i in range(3)]
    reqs = [
        animator_pb2.ExtractMotionRequest(
            config=animator_pb2.ExtractMotionConfig(
                fps=common_pb2.Rational(num=30000, den=1001), total_frames=3
            )
        )
    ]
    reqs += [
        animator_pb2.ExtractMotionRequest(
            crop=animator_pb2.DrivingCrop(index=i, image=array_to_raw(c), ratios=RATIOS)
        )
        for i, c in enumerate(crops)
    ]
    template = stub.ExtractMotion(iter(reqs), timeout=60).template
    assert len(template.frames) == 3 and template.num_kp == 21
    assert (template.fps.num, template.fps.den) == (30000, 1001) and template.model_version
    assert template.frames[2].ratios.eye_right == pytest.approx(0.28)

    setup = animator_pb2.AnimateSetup(source_crop=array_to_raw(_noise(2)), source_ratios=RATIOS)
    by_motion = [animator_pb2.AnimateRequest(setup=setup)]
    by_motion += [animator_pb2.AnimateRequest(motion=f) for f in template.frames]
    by_crop = [animator_pb2.AnimateRequest(setup=setup)]
    by_crop += [
        animator_pb2.AnimateRequest(
            crop=animator_pb2.DrivingCrop(index=i, image=array_to_raw(c), ratios=RATIOS)
        )
        for i, c in enumerate(crops)
    ]
    replies_motion = [r for r in stub.Animate(iter(by_motion), timeout=60) if r.HasField("frame")]
    replies_crop = [r for r in stub.Animate(iter(by_crop), timeout=60) if r.HasField("frame")]
    a = [raw_to_array(r.frame.image) for r in replies_motion]
    b = [raw_to_array(r.frame.image) for r in replies_crop]
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        assert np.abs(x.astype(np.int16) - y.astype(np.int16)).max() <= 1
    # Frames made from crops carry the motion M extracted, the same as ExtractMotion's template
    # (so a cache miss can store the template without a second pass); frames made from motion
    # carry none.
    assert not any(r.HasField("motion") for r in replies_motion)
    for i, (reply, ref) in enumerate(zip(replies_crop, template.frames, strict=True)):
        got = reply.motion
        assert got.index == i == ref.index and got.scale == pytest.approx(ref.scale, abs=1e-5)
        for name in ("rotation", "expression", "translation", "keypoints"):
            np.testing.assert_allclose(getattr(got, name), getattr(ref, name), atol=1e-5)
        assert got.ratios.eye_right == pytest.approx(ref.ratios.eye_right)


@pytest.mark.parametrize(
    "first",
    [
        animator_pb2.AnimateRequest(
            crop=animator_pb2.DrivingCrop(index=0, image=array_to_raw(_noise(0)))
        ),
        animator_pb2.AnimateRequest(
            setup=animator_pb2.AnimateSetup(
                source_crop=common_pb2.RawImage(width=4, height=4, channels=3, data=b"xx")
            )
        ),
        animator_pb2.AnimateRequest(
            setup=animator_pb2.AnimateSetup(
                source_crop=array_to_raw(_noise(0)),
                options=common_pb2.AnimationOptions(driving_multiplier=float("nan")),
            )
        ),
    ],
    ids=["crop_first", "truncated_crop", "nan_multiplier"],
)
def test_bad_first_message_is_invalid_argument(served, first):
    with pytest.raises(grpc.RpcError) as err:
        list(served[0].Animate(iter([first]), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details()


def test_bad_motion_and_bad_extract_are_invalid_argument(served):
    setup = animator_pb2.AnimateSetup(source_crop=array_to_raw(_noise(3)), source_ratios=RATIOS)
    bad = common_pb2.FrameMotion(
        index=0, scale=1.0, rotation=[1.0] * 9, expression=[0.0] * 5, translation=[0.0] * 3
    )
    reqs = [animator_pb2.AnimateRequest(setup=setup), animator_pb2.AnimateRequest(motion=bad)]
    with pytest.raises(grpc.RpcError) as err:
        list(served[0].Animate(iter(reqs), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expression" in err.value.details()
    crop_only = [
        animator_pb2.ExtractMotionRequest(
            crop=animator_pb2.DrivingCrop(index=0, image=array_to_raw(_noise(0)))
        )
    ]
    with pytest.raises(grpc.RpcError) as err:
        served[0].ExtractMotion(iter(crop_only), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_too_many_frames_is_resource_exhausted(served):
    setup = animator_pb2.AnimateSetup(source_crop=array_to_raw(_noise(3)), total_frames=51)
    with pytest.raises(grpc.RpcError) as err:
        list(served[0].Animate(iter([animator_pb2.AnimateRequest(setup=setup)]), timeout=30))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_client_cancel_stops_the_job(served, lp_primary):
    """After the client cancels an endless stream the server generates no more frames."""
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    setup = animator_pb2.AnimateSetup(source_crop=array_to_raw(_noise(4)), source_ratios=RATIOS)

    def endless():
        yield animator_pb2.AnimateRequest(setup=setup)
        i = 0
        while True:
            yield animator_pb2.AnimateRequest(motion=templates.frame_to_proto(tpl.frames[i % 3]))
            i += 1

    call = served[0].Animate(endless(), timeout=60)
    assert next(call).frame.index == 0
    call.cancel()
    time.sleep(1.0)
    generated = metrics.FRAMES._value.get()
    time.sleep(1.5)
    assert metrics.FRAMES._value.get() == generated
    assert metrics.QUEUE_DEPTH.collect()[0].samples[0].value == 0  # nothing left queued


def _reason(err: grpc.RpcError) -> str | None:
    return dict(err.trailing_metadata() or ()).get(REASON_METADATA_KEY)


def test_get_info_reports_the_loaded_model(served, pipeline, lp_primary):
    info = served[0].GetInfo(animator_pb2.GetInfoRequest(), timeout=10)
    models = load_models(lp_primary.checkpoints, input_size=lp_primary.image_size)
    assert info.model_fingerprint == pipeline.fingerprint == models.fingerprint
    assert len(info.model_fingerprint) == 32
    assert info.config_name == str(lp_primary.checkpoints / "models.yaml")
    assert (info.backend, info.device, info.dtype) == ("torch", "cpu", "float32")
    assert (info.input_size, info.num_kp, info.batch_size) == (
        lp_primary.image_size,
        lp_primary.num_kp,
        2,
    )
    assert info.provenance == pipeline.provenance


def test_get_info_is_unavailable_while_loading():
    servicer = AnimatorServicer()
    service = GrpcService(
        name="animator-loading",
        service_names=[SERVICE_NAME],
        register=lambda server: add_to_server(servicer, server),
        port=0,
        metrics_port=None,
        grace_s=1.0,
    )
    port = service.start()
    channel = make_channel(f"127.0.0.1:{port}")
    try:
        with pytest.raises(grpc.RpcError) as err:
            animator_pb2_grpc.AnimatorServiceStub(channel).GetInfo(
                animator_pb2.GetInfoRequest(), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and _reason(err.value) == "loading"
    finally:
        channel.close()
        service.stop(0)


def test_motion_from_another_model_is_refused_and_frames_name_their_model(
    served, pipeline, lp_primary
):
    """Motion sent with another model's fingerprint never reaches the networks; frames say
    which model made them (and so which fingerprint the motion they carry belongs to)."""
    stub = served[0]
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    motion = [animator_pb2.AnimateRequest(motion=templates.frame_to_proto(f)) for f in tpl.frames]

    def setup(fingerprint: str) -> animator_pb2.AnimateRequest:
        return animator_pb2.AnimateRequest(
            setup=animator_pb2.AnimateSetup(
                source_crop=array_to_raw(_noise(5)),
                source_ratios=RATIOS,
                total_frames=3,
                motion_fingerprint=fingerprint,
            )
        )

    frames_before = metrics.FRAMES._value.get()
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Animate(iter([setup("0" * 32), *motion]), timeout=60))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(err.value) == "model_mismatch" and pipeline.fingerprint in err.value.details()
    assert metrics.FRAMES._value.get() == frames_before
    replies = list(stub.Animate(iter([setup(pipeline.fingerprint), *motion]), timeout=60))
    assert len(replies) == 3
    assert {r.model_fingerprint for r in replies} == {pipeline.fingerprint}
    crop = animator_pb2.DrivingCrop(index=0, image=array_to_raw(_noise(6)), ratios=RATIOS)
    from_crop = list(
        stub.Animate(iter([setup(""), animator_pb2.AnimateRequest(crop=crop)]), timeout=60)
    )
    assert [r.model_fingerprint for r in from_crop] == [pipeline.fingerprint]
    assert from_crop[0].HasField("motion")


def test_onnxruntime_backend_serves_the_same_frames(pipeline, lp_primary):
    """The real animator process with ANIMATOR_BACKEND=onnxruntime (CPU provider; the default
    provider list falls back past TensorRT and CUDA, and says so) streams frames within one
    uint8 level of the torch fp32 pipeline, and names its backend in GetInfo and the metrics."""
    from tests.service_process import start_service
    from tests.unit.animator.ort_export_cache import primary_export

    export = primary_export()
    svc = start_service(
        "animator",
        {
            "ANIMATOR_PORT": "0",
            "ANIMATOR_METRICS_PORT": "0",
            "ANIMATOR_GRACE_S": "5",
            "ANIMATOR_WEIGHTS_DIR": str(lp_primary.checkpoints),
            "ANIMATOR_DEVICE": "cpu",
            "ANIMATOR_INPUT_SIZE": str(lp_primary.image_size),
            "ANIMATOR_BATCH_SIZE": "2",
            "ANIMATOR_BACKEND": "onnxruntime",
            "ANIMATOR_ONNX_DIR": str(export.folder),
        },
    )
    channel = make_channel(svc.target)
    try:
        deadline = time.monotonic() + 120
        while check_health(channel, SERVICE_NAME) != "SERVING":
            assert svc.proc.poll() is None and time.monotonic() < deadline, svc.lines[-20:]
            time.sleep(0.2)
        stub = animator_pb2_grpc.AnimatorServiceStub(channel)
        info = stub.GetInfo(animator_pb2.GetInfoRequest(), timeout=10)
        assert info.backend == "onnxruntime/CPUExecutionProvider" and info.device == "cpu"
        assert info.model_fingerprint == pipeline.fingerprint
        tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
        frames = tpl.frames + tpl.frames[:2]  # batches of 2, 2, 1
        source = _noise(7)
        setup = animator_pb2.AnimateSetup(
            source_crop=array_to_raw(source),
            source_ratios=RATIOS,
            total_frames=len(frames),
            job_id="ort",
        )
        requests = [animator_pb2.AnimateRequest(setup=setup)]
        requests += [
            animator_pb2.AnimateRequest(motion=templates.frame_to_proto(f)) for f in frames
        ]
        replies = list(stub.Animate(iter(requests), timeout=120))
        assert [r.frame.index for r in replies] == list(range(len(frames)))
        state = pipeline.prepare_source(source, Ratios(0.3, 0.28, 0.05), MotionOptions())
        expected = list(pipeline.generate(state, frames, 0))
        for reply, want in zip(replies, expected, strict=True):
            got = raw_to_array(reply.frame.image)
            assert got.shape == want.shape
            assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= 1
        text = svc.metrics()
        assert (
            'animator_backend_info{backend="onnxruntime",device="cpu",'
            'provider="CPUExecutionProvider"} 1.0'
        ) in text
        assert "animator_frames_total 5.0" in text
        logs = "\n".join(svc.lines)
        assert "TensorrtExecutionProvider is not available" in logs
        assert "CUDAExecutionProvider is not available" in logs
        assert "backend onnxruntime/CPUExecutionProvider" in logs
    finally:
        channel.close()
        svc.terminate()
