"""The eight-gather trilinear sampler: bit-identical to F.grid_sample as W uses it, exportable
with no GridSample node at an opset below 20."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from services.animator.gather_sampler import grid_sample_3d_gather, sampler_for_export
from services.animator.weights import load_models


def _reference(x, grid):
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@pytest.mark.parametrize("shape", [(1, 1, 2, 2, 2), (2, 5, 4, 7, 6), (3, 8, 6, 16, 16)])
@pytest.mark.parametrize("spread", [0.9, 1.5, 4.0])  # inside, straddling, mostly outside
def test_bit_identical_on_random_inputs(shape, spread):
    gen = torch.Generator().manual_seed(hash((shape, spread)) % 2**31)
    n, c, d, h, w = shape
    x = torch.randn(n, c, d, h, w, generator=gen)
    grid = (torch.rand(n, 3, 5, 4, 3, generator=gen) * 2 - 1) * spread
    got = grid_sample_3d_gather(x, grid)
    expected = _reference(x, grid)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.equal(got, expected), f"max diff {(got - expected).abs().max()}"
    if spread > 1:
        assert (grid.abs() > 1).any()  # some points really fell outside the volume
    if spread > 3:
        assert (expected == 0).any()  # and some so far that every corner is padding


def test_bit_identical_on_edges_and_exact_corners():
    x = torch.randn(1, 3, 4, 5, 6)
    # grid values hitting voxel centres, the volume's faces (±1) and just beyond, and NaN-free
    # half-voxel offsets: the cases where floor() and the bounds checks decide
    values = torch.tensor(
        [-1.0, -1.0 - 1e-7, -0.75, -1 / 3, 0.0, 1 / 6, 0.5, 1.0, 1.0 + 1e-7, -1.2, 1.2, -3.0, 3.0]
    )
    zz, yy, xx = torch.meshgrid(values, values, values, indexing="ij")
    grid = torch.stack([xx, yy, zz], dim=-1)[None]  # 1×13×13×13×3
    assert torch.equal(grid_sample_3d_gather(x, grid), _reference(x, grid))


def test_non_contiguous_inputs_like_ws_broadcast_volume():
    base = torch.randn(1, 4, 3, 8, 8)
    x = base.expand(3, *base.shape[1:])  # W broadcasts f_s along the batch without a copy
    grid = torch.rand(3, 3, 8, 8, 3) * 2.2 - 1.1
    assert torch.equal(grid_sample_3d_gather(x, grid), _reference(x, grid))


def test_rejects_what_w_never_asks_for():
    with pytest.raises(ValueError):
        grid_sample_3d_gather(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, 2))


def test_warping_network_is_bit_identical_with_the_gather_sampler(lp_primary):
    models = load_models(lp_primary.checkpoints, input_size=lp_primary.image_size)
    W = models.W
    gen = torch.Generator().manual_seed(0)
    num_kp = W.dense_motion_network.num_kp
    kp_s, kp_d = (0.3 * torch.randn(2, num_kp, 3, generator=gen) for _ in range(2))
    with torch.no_grad():
        size = lp_primary.image_size
        f_s = models.F(torch.rand(2, 3, size, size, generator=gen))  # the real volume shape
        expected = W(f_s, kp_driving=kp_d, kp_source=kp_s)
        with sampler_for_export(gather=True, keep_fp32=False):
            assert F.grid_sample is not _reference  # patched while tracing
            got = W(f_s, kp_driving=kp_d, kp_source=kp_s)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert F.grid_sample.__module__ == "torch.nn.functional"  # restored


class _Warp(torch.nn.Module):
    def forward(self, x, grid):
        return F.grid_sample(x, grid, align_corners=False)


def test_exports_below_opset_20_without_gridsample(tmp_path):
    x = torch.randn(2, 3, 4, 6, 6)
    grid = torch.rand(2, 4, 6, 6, 3) * 3 - 1.5
    batch = torch.export.Dim("batch", min=1, max=64)
    with torch.no_grad(), sampler_for_export(gather=True, keep_fp32=False):
        program = torch.onnx.export(
            _Warp().eval(),
            (x, grid),
            dynamo=True,
            opset_version=18,
            input_names=["x", "grid"],
            output_names=["y"],
            dynamic_shapes={"x": {0: batch}, "grid": {0: batch}},
        )
    path = tmp_path / "warp.onnx"
    program.save(str(path))
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    assert "GridSample" not in ops and ("Gather" in ops or "GatherND" in ops)
    assert model.opset_import[0].version == 18
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 3):  # the batch stayed dynamic
        xn, gn = torch.randn(n, 3, 4, 6, 6), torch.rand(n, 4, 6, 6, 3) * 3 - 1.5
        (y,) = session.run(None, {"x": xn.numpy(), "grid": gn.numpy()})
        np.testing.assert_allclose(y, _reference(xn, gn).numpy(), atol=1e-6, rtol=0)


def test_fp32_sampling_in_half_precision_exports():
    x = torch.randn(1, 2, 3, 4, 4).half()
    grid = (torch.rand(1, 3, 4, 4, 3) * 2 - 1).half()
    with sampler_for_export(gather=False, keep_fp32=True):
        y = F.grid_sample(x, grid, align_corners=False)
    assert y.dtype == torch.float16
    assert torch.equal(y, _reference(x.float(), grid.float()).half())
