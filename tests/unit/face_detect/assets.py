"""Test assets for face_detect: real face photos shipped in installed packages, and small ONNX
models with the input/output signatures of SCRFD det_10g, 2d106det and LivePortrait's
landmark.onnx, built here so the insightface path runs offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

OPSET = 13
IR_VERSION = 8  # old enough for any onnxruntime we support


def insightface_image_path(name: str) -> Path:
    """A photo from the installed insightface wheel's data/images (found without importing it)."""
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.submodule_search_locations, "insightface is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / name


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).copy()


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def _const(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    arr = np.asarray(value, dtype=dtype)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name + "_v"))


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# 5 key points around an anchor, in strides: eyes, nose, mouth corners
_KPS = np.array([[-0.4, -0.3], [0.4, -0.3], [0.0, 0.0], [-0.3, 0.4], [0.3, 0.4]], np.float32)


def build_scrfd(path: Path) -> Path:
    """SCRFD-like detector: input ``input.1`` 1x3xHxW, 9 outputs (scores, boxes, key points for
    strides 8/16/32, two anchors per cell). An anchor fires where its whole stride cell is bright
    (input > 0.9 after insightface's (x-127.5)/128); boxes are +-2 strides around the anchor."""
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["gray"], axes=[1], keepdims=1)]
    outs: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    for s in (8, 16, 32):
        p = f"s{s}_"
        nodes += [
            helper.make_node(
                "AveragePool", ["gray"], [p + "pool"], kernel_shape=[s, s], strides=[s, s]
            ),
            _const(p + "thr", 0.9),
            _const(p + "gain", 40.0),
            _const(p + "shape", [-1, 1], np.int64),
            helper.make_node("Sub", [p + "pool", p + "thr"], [p + "centred"]),
            helper.make_node("Mul", [p + "centred", p + "gain"], [p + "logit"]),
            helper.make_node("Sigmoid", [p + "logit"], [p + "prob"]),
            helper.make_node("Reshape", [p + "prob", p + "shape"], [p + "cell"]),  # N x 1
            helper.make_node("Concat", [p + "cell", p + "cell"], [p + "pair"], axis=1),  # N x 2
            helper.make_node("Reshape", [p + "pair", p + "shape"], [f"score_{s}"]),  # 2N x 1
            _const(p + "zero4", np.zeros((1, 4))),
            _const(p + "box", np.full((1, 4), 2.0)),
            helper.make_node("Mul", [f"score_{s}", p + "zero4"], [p + "z4"]),
            helper.make_node("Add", [p + "z4", p + "box"], [f"bbox_{s}"]),  # 2N x 4
            _const(p + "zero10", np.zeros((1, 10))),
            _const(p + "kp", _KPS.reshape(1, 10)),
            helper.make_node("Mul", [f"score_{s}", p + "zero10"], [p + "z10"]),
            helper.make_node("Add", [p + "z10", p + "kp"], [f"kps_{s}"]),  # 2N x 10
        ]
        outs["score"].append(f"score_{s}")
        outs["bbox"].append(f"bbox_{s}")
        outs["kps"].append(f"kps_{s}")
    widths = {"score": 1, "bbox": 4, "kps": 10}
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", widths[k]])
        for k in ("score", "bbox", "kps")
        for n in outs[k]
    ]
    graph = helper.make_graph(
        nodes,
        "scrfd_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])],
        outputs,
    )
    return _save(graph, path)


def ring(n: int, radius: float = 0.5) -> np.ndarray:
    """n points on a circle, n x 2."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1).astype(np.float32)


def _constant_head(name: str, input_name: str, side: int, values: list[np.ndarray]):
    """Nodes mapping a 1x3xSxS input to constant outputs (each 1 x len(v))."""
    nodes = [
        helper.make_node("GlobalAveragePool", [input_name], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
    ]  # 1 x 3
    outputs = []
    for i, v in enumerate(values):
        v = np.asarray(v, np.float32).reshape(1, -1)
        nodes += [
            _const(f"w{i}", np.zeros((3, v.shape[1]))),
            _const(f"b{i}", v),
            helper.make_node("MatMul", ["flat", f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"out{i}"]),
        ]
        outputs.append(helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, [1, v.shape[1]]))
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, side, side])
    return helper.make_graph(nodes, name, [inp], outputs)


def build_landmark106(path: Path) -> Path:
    """2d106det-like: input ``data`` 1x3x192x192 -> 1x212 (106 points in [-1, 1] crop units)."""
    return _save(_constant_head("lmk106_like", "data", 192, [ring(106, 0.5)]), path)


# 203-point layout with known ratios (SPEC 5.5): left eye 0.3, right eye 0.25, lip 0.2
RATIOS_203 = (0.3, 0.25, 0.2)


def points_203() -> np.ndarray:
    """203 points in [0, 1] crop units of landmark.onnx, face-like enough for the two-point axis."""
    pts = np.tile(np.array([[0.5, 0.6]], np.float32), (203, 1)) + ring(203, 0.3)

    def eye(c, w, ratio, corners, lids):
        pts[corners[0]], pts[corners[1]] = (c[0] - w / 2, c[1]), (c[0] + w / 2, c[1])
        pts[lids[0]], pts[lids[1]] = (c[0], c[1] - ratio * w / 2), (c[0], c[1] + ratio * w / 2)

    eye((0.38, 0.45), 0.1, RATIOS_203[0], (0, 12), (6, 18))
    eye((0.62, 0.45), 0.1, RATIOS_203[1], (24, 36), (30, 42))
    eye((0.5, 0.72), 0.2, RATIOS_203[2], (48, 66), (90, 102))
    return pts


def build_landmark203(path: Path) -> Path:
    """landmark.onnx-like: input 1x3x224x224, three outputs, the third 1x406 (203 points)."""
    values = [np.zeros(4), np.zeros(4), points_203().reshape(-1)]
    return _save(_constant_head("lmk203_like", "input", 224, values), path)


def bright_square(h: int = 480, w: int = 640, box=(200, 120, 392, 312)) -> np.ndarray:
    """Dark RGB image with one white square (x1, y1, x2, y2) for the SCRFD-like model."""
    img = np.full((h, w, 3), 20, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img
