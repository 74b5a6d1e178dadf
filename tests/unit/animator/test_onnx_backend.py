"""The ONNX Runtime backend on the CPU provider: export, manifest checks, parity with torch fp32
on the fixture weights, cross-job batching, provider selection and fallback, configuration."""

from __future__ import annotations

import json
import logging
import shutil
import sys

import numpy as np
import onnx
import pytest
import torch

from services.animator import metrics, ort_backend, templates, weights_cli
from services.animator.batcher import CrossJobBatcher
from services.animator.config import AnimatorConfig
from services.animator.motion_types import MotionOptions
from services.animator.onnx_export import MANIFEST, ExportError, export_onnx, load_export
from services.animator.pipeline import AnimatorPipeline, Ratios
from services.animator.servicer import info_of
from services.common.config import ConfigError
from tests.unit.animator.ort_export_cache import primary_export
from tests.unit.animator.test_e2e_parity import load_scenario


@pytest.fixture(scope="module")
def export():
    return primary_export()


@pytest.fixture(scope="module")
def pipes(lp_primary, export):
    kwargs = {"input_size": lp_primary.image_size, "batch_size": 3}
    torch_pipe = AnimatorPipeline.from_weights(lp_primary.checkpoints, **kwargs)
    ort_pipe = AnimatorPipeline.from_weights(
        lp_primary.checkpoints,
        backend="onnxruntime",
        onnx_dir=export.folder,
        ort_providers=["cpu"],
        **kwargs,
    )
    return torch_pipe, ort_pipe


def test_manifest_records_the_export(export, lp_primary, pipes):
    m = export.manifest
    assert m["fingerprint"] == pipes[0].fingerprint
    assert (m["opset"], m["precision"], m["sampler"]) == (20, "fp32", "GridSample")
    assert m["input_size"] == lp_primary.image_size
    assert m["versions"]["torch"] == torch.__version__ and m["versions"]["onnx"] == onnx.__version__
    graph = onnx.load(str(export.path("warp_decode")))
    assert graph.opset_import[0].version == 20
    assert "GridSample" in {n.op_type for n in graph.graph.node}
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in graph.graph.input
    }
    assert isinstance(dims["x_d"][0], str) and dims["x_d"][0] == dims["x_s"][0]  # dynamic batch
    assert isinstance(dims["f_s"][0], str) and dims["f_s"][0] != dims["x_d"][0]  # sources


def _scenario_run(pipe, lp_set, name):
    ref, options, template = load_scenario(lp_set, name)
    state = pipe.prepare_source(torch.from_numpy(ref["prep0.I"]), Ratios(0.3, 0.3, 0.1), options)
    return ref, pipe.run_batch(state, template.frames[:3], 0)


@pytest.mark.parametrize("scenario", ["cli_default", "absolute_nostitch", "retarget_eye_lip"])
def test_onnxruntime_frames_match_torch_fp32(pipes, lp_primary, scenario):
    torch_pipe, ort_pipe = pipes
    assert ort_pipe.backend == "onnxruntime/CPUExecutionProvider"
    ref, expected = _scenario_run(torch_pipe, lp_primary, scenario)
    _, got = _scenario_run(ort_pipe, lp_primary, scenario)
    torch.testing.assert_close(got.x_d, expected.x_d, atol=1e-4, rtol=0)  # F and M via ORT too
    assert (got.image - expected.image).abs().max() < 1e-4
    diff = np.abs(got.images.astype(np.int16) - expected.images.astype(np.int16))
    assert diff.max() <= 1, f"max {diff.max()} uint8 levels"
    for i in range(len(got.indices)):  # and the upstream reference frames, as torch is held to
        up = np.abs(got.images[i].astype(np.int16) - ref[f"frame{i}.I_p_uint8"])
        assert up.max() <= 1
    assert got.deformation is None and got.occlusion_map is None  # W+G fused: frames only


def test_cross_job_batch_matches_each_job_alone(pipes, lp_primary):
    _, ort_pipe = pipes
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    rng = np.random.default_rng(3)
    crops = [
        rng.integers(0, 256, (lp_primary.image_size,) * 2 + (3,), dtype=np.uint8) for _ in range(2)
    ]
    alone = []
    for crop in crops:
        state = ort_pipe.prepare_source(crop, Ratios(0.3, 0.3, 0.1), MotionOptions())
        alone.append(ort_pipe.run_batch(state, tpl.frames[:2], 0).images)
    batcher = CrossJobBatcher(ort_pipe, max_batch=4, max_wait_s=5.0, max_jobs=2)
    slots = [batcher.open_job(f"job{i}") for i in range(2)]
    for slot, crop in zip(slots, crops, strict=True):
        slot.state = ort_pipe.prepare_source(crop, Ratios(0.3, 0.3, 0.1), MotionOptions())
    batches_before = metrics.BATCH_SIZE.collect()[0].samples
    futures = [batcher.submit(slot, tpl.frames[:2], 0) for slot in slots]  # queued, then start
    batcher.start()
    try:
        outs = [f.result(timeout=120) for f in futures]
    finally:
        batcher.stop()
    after = metrics.BATCH_SIZE.collect()[0].samples
    count = {s.name: s.value for s in after}["animator_batch_size_sum"] - {
        s.name: s.value for s in batches_before
    }["animator_batch_size_sum"]
    assert count == 4  # one batch of both jobs' frames
    for out, expected in zip(outs, alone, strict=True):
        assert out.indices == [0, 1]
        assert np.abs(out.images.astype(np.int16) - expected.astype(np.int16)).max() <= 1


def test_get_info_and_metric_name_the_backend(pipes):
    _, ort_pipe = pipes
    info = info_of(ort_pipe)
    assert info.backend == "onnxruntime/CPUExecutionProvider" and info.device == "cpu"
    assert info.model_fingerprint == ort_pipe.fingerprint
    metrics.record_backend(ort_pipe.backend, str(ort_pipe.device))
    samples = metrics.BACKEND_INFO.collect()[0].samples
    assert [(s.labels, s.value) for s in samples] == [
        ({"backend": "onnxruntime", "provider": "CPUExecutionProvider", "device": "cpu"}, 1.0)
    ]
    metrics.record_backend("torch", "cpu")
    assert [s.labels["backend"] for s in metrics.BACKEND_INFO.collect()[0].samples] == ["torch"]


def test_stale_export_is_refused(export, tmp_path, lp_primary):
    with pytest.raises(ExportError) as err:
        load_export(export.folder, "0" * 32)
    assert err.value.reason == "stale_export" and export.fingerprint in err.value.message
    # the same graphs, but the weights loaded at another input size are another model
    with pytest.raises(ExportError, match="stale ONNX export"):
        AnimatorPipeline.from_weights(
            lp_primary.checkpoints,
            backend="onnxruntime",
            onnx_dir=export.folder,
            ort_providers=["cpu"],
            input_size=lp_primary.image_size * 2,
        )
    copy = tmp_path / "copy"
    shutil.copytree(export.folder, copy)
    with open(copy / "warp_decode.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ExportError, match="changed since the export") as err:
        load_export(copy, export.fingerprint)
    assert err.value.reason == "stale_export"


def test_bad_export_folders_are_refused(export, tmp_path):
    with pytest.raises(ExportError, match="no DYNAMICS_ONNX_MANIFEST") as err:
        load_export(tmp_path, export.fingerprint)
    assert err.value.reason == "bad_folder"
    copy = tmp_path / "copy"
    shutil.copytree(export.folder, copy)
    (copy / "motion.onnx").unlink()
    with pytest.raises(ExportError, match="lacks its motion graph"):
        load_export(copy, export.fingerprint)
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ExportError, match="unknown manifest format"):
        load_export(copy, export.fingerprint)


def test_export_refuses_bad_folders_and_opsets(lp_primary, tmp_path):
    """Each refusal happens before any tracing (these calls take milliseconds)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export_onnx(lp_primary.checkpoints, tmp_path / "file")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty and not an ONNX export"):
        export_onnx(lp_primary.checkpoints, tmp_path / "busy")
    with pytest.raises(ExportError, match="opset >= 20") as err:
        export_onnx(lp_primary.checkpoints, tmp_path / "o19", opset=19)
    assert err.value.reason == "bad_opset"
    with pytest.raises(ExportError, match="minimum"):
        export_onnx(lp_primary.checkpoints, tmp_path / "o17", opset=17, gather_sampler=True)
    assert not (tmp_path / "o19").exists() and (tmp_path / "busy" / "notes.txt").exists()


def test_cli_refuses_a_folder_without_weights(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = weights_cli.main(
        ["export-onnx", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    code = weights_cli.main(["export-onnx", str(tmp_path / "missing")])
    assert code == 1


def test_cli_export_help_names_the_options(capsys):
    assert weights_cli.main(["export-onnx", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--opset", "--fp16", "--gather-sampler"):
        assert flag in text


def test_provider_selection_keeps_order_and_logs_each_fallback(caplog):
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING, logger="services.animator.ort_backend"):
        chosen = ort_backend.select_providers(("tensorrt", "cuda", "cpu"), available)
    assert chosen == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert [r.message.split()[3] for r in caplog.records] == ["TensorrtExecutionProvider"]
    with pytest.raises(ValueError, match="none of the requested"):
        ort_backend.select_providers(("tensorrt",), ["CPUExecutionProvider"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="services.animator.ort_backend"):
        trt_alone = ort_backend.select_providers(
            ("tensorrt", "cpu"), available + ["TensorrtExecutionProvider"]
        )
    assert trt_alone == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert "without CUDAExecutionProvider behind it" in caplog.text
    assert ort_backend.parse_providers("") == ("tensorrt", "cuda", "cpu")
    assert ort_backend.parse_providers("CUDAExecutionProvider, cpu") == ("cuda", "cpu")
    with pytest.raises(ValueError, match="unknown ONNX Runtime provider"):
        ort_backend.parse_providers("rocm")


def test_real_engine_falls_back_to_cpu_and_logs_it(export, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        # onnxruntime-gpu (the CUDA image's lock) on a machine without a GPU: a GPU provider
        # that cannot run is a refusal that says so, never a silent CPU animator
        assert not torch.cuda.is_available()
        with pytest.raises(ExportError, match="torch sees no CUDA device") as err:
            ort_backend.OrtEngine(export, providers=("tensorrt", "cuda", "cpu"), batch_size=2)
        assert err.value.reason == "bad_backend"
        return
    with caplog.at_level(logging.INFO, logger="services.animator.ort_backend"):
        engine = ort_backend.OrtEngine(export, providers=("tensorrt", "cuda", "cpu"), batch_size=2)
    assert engine.provider == "CPUExecutionProvider" and engine.device.type == "cpu"
    text = caplog.text
    assert "TensorrtExecutionProvider is not available" in text
    assert "CUDAExecutionProvider is not available" in text
    assert "provider CPUExecutionProvider" in text


@pytest.mark.parametrize(
    ("init", "expected"),
    [
        ('__version__ = "10.16.1.11"\n', "10.16.1.11"),
        ('raise OSError("libnvinfer.so.10: cannot open shared object file")\n', None),
        ('raise ImportError("No module named tensorrt_bindings")\n', None),
    ],
    ids=["loads", "library-missing", "bindings-missing"],
)
def test_tensorrt_is_preloaded_or_its_absence_is_said(
    tmp_path, monkeypatch, caplog, init, expected
):
    # a real package on sys.path, standing in for pip's tensorrt (its import loads libnvinfer)
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text(init)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    with caplog.at_level(logging.WARNING, logger="services.animator.ort_backend"):
        assert ort_backend.preload_tensorrt() == expected
    if expected is None:
        assert "will not find libnvinfer" in caplog.text
        assert init.split('"')[1] in caplog.text  # the import error is named
    else:
        assert not caplog.records


def test_trt_profiles_cover_the_batchers_sizes():
    opts = ort_backend.trt_profiles(
        {"f_s": (8, 4, 2, 8, 8), "x_d": (8, 21, 3)}, {"f_s": 0, "x_d": 0}, 8
    )
    assert opts["trt_profile_min_shapes"] == "f_s:1x4x2x8x8,x_d:1x21x3"
    assert (
        opts["trt_profile_opt_shapes"]
        == opts["trt_profile_max_shapes"]
        == "f_s:8x4x2x8x8,x_d:8x21x3"
    )
    trt = ort_backend._provider_options(
        "TensorrtExecutionProvider", device_id=0, trt_cache_dir=None, fp16=True, profiles=opts
    )
    assert trt["trt_fp16_enable"] == "True" and "trt_engine_cache_enable" not in trt


def test_config_reads_the_backend_settings(tmp_path):
    env = {"ANIMATOR_WEIGHTS_DIR": str(tmp_path), "ANIMATOR_DEVICE": "cpu"}
    cfg = AnimatorConfig.from_env(env)
    assert cfg.backend == "torch" and cfg.ort_providers == ("tensorrt", "cuda", "cpu")
    cfg = AnimatorConfig.from_env(
        {
            **env,
            "ANIMATOR_BACKEND": "onnxruntime",
            "ANIMATOR_ORT_PROVIDERS": "cuda,cpu",
            "ANIMATOR_ONNX_DIR": str(tmp_path / "x"),
            "ANIMATOR_TRT_CACHE_DIR": str(tmp_path / "trt"),
        }
    )
    assert (cfg.backend, cfg.ort_providers) == ("onnxruntime", ("cuda", "cpu"))
    assert cfg.onnx_dir == tmp_path / "x" and cfg.trt_cache_dir == tmp_path / "trt"
    with pytest.raises(ConfigError, match="ANIMATOR_BACKEND"):
        AnimatorConfig.from_env({**env, "ANIMATOR_BACKEND": "tensorflow"})
    with pytest.raises(ConfigError, match="ANIMATOR_ORT_PROVIDERS"):
        AnimatorConfig.from_env({**env, "ANIMATOR_ORT_PROVIDERS": "openvino"})


def test_unknown_backend_is_refused(lp_primary):
    with pytest.raises(ValueError, match="unknown animator backend"):
        AnimatorPipeline.from_weights(lp_primary.checkpoints, backend="tvm")


def test_cuda_graph_mode_marks_each_step_and_clones_graph_outputs(lp_primary, monkeypatch):
    """reduce-overhead (CUDA graphs) replays write into graph-owned buffers: every batch starts
    a new step, and the frames, deformation and occlusion a batch returns are copies. The flag
    is what a CUDA pipeline compiled in that mode sets; the code path is device independent."""
    pipe = AnimatorPipeline.from_weights(
        lp_primary.checkpoints, input_size=lp_primary.image_size, batch_size=2
    )
    steps = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    produced = {}
    real_g = pipe.G

    def g_spy(feature):
        produced["image"] = real_g(feature=feature)
        return produced["image"]

    pipe.G = g_spy
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    state = pipe.prepare_source(np.full((lp_primary.image_size,) * 2 + (3,), 128, np.uint8))
    plain = pipe.run_batch(state, tpl.frames[:2], 0)
    assert steps == [] and plain.image.data_ptr() == produced["image"].data_ptr()
    pipe.cuda_graphs = True
    out = pipe.run_batch(state, tpl.frames[2:3], 2)
    assert steps == [1]
    assert out.image.data_ptr() != produced["image"].data_ptr()
    torch.testing.assert_close(out.image, produced["image"].float(), rtol=0, atol=0)


def test_fp16_export_keeps_grid_sampling_fp32(lp_primary, export, tmp_path, pipes):
    half = export_onnx(
        lp_primary.checkpoints, tmp_path / "fp16", fp16=True, input_size=lp_primary.image_size
    )
    assert (half.manifest["precision"], half.manifest["grid_sample_precision"]) == ("fp16", "fp32")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(half.path("warp_decode"))))
    elem = {
        v.name: v.type.tensor_type.elem_type
        for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]
    }
    samplers = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert len(samplers) == 2  # the dense-motion deformation and W's warp
    assert all(elem[n.input[0]] == elem[n.input[1]] == onnx.TensorProto.FLOAT for n in samplers)
    convs = {elem.get(n.input[0]) for n in model.graph.node if n.op_type == "Conv"}
    assert convs == {onnx.TensorProto.FLOAT16}
    engine = ort_backend.OrtEngine(half, providers=["cpu"], batch_size=2)
    _, ort_pipe = pipes
    gen = torch.Generator().manual_seed(0)
    f_s = ort_pipe.appearance(
        torch.rand(1, 3, lp_primary.image_size, lp_primary.image_size, generator=gen)
    )
    kp_s, kp_d = (0.2 * torch.randn(2, engine.num_kp, 3, generator=gen) for _ in range(2))
    frame16 = engine.warp_decode(f_s, kp_s, kp_d)
    frame32 = ort_pipe.engine.warp_decode(f_s, kp_s, kp_d)
    assert frame16.dtype == torch.float32 and torch.isfinite(frame16).all()
    assert (frame16 - frame32).abs().mean() < 0.01
