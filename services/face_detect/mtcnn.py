"""MTCNN face detector (Zhang et al. 2016): our own P/R/O-Net code running the real weights that
the facenet-pytorch wheel ships as plain state dicts (``facenet_pytorch/data/{p,r,o}net.pt``).

The package itself is never imported: its folder is located with ``importlib.util.find_spec``
(or given explicitly) and only the three state dicts are read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from services.face_detect.types import Detection

STAGE_THRESHOLDS = (0.6, 0.7, 0.7)  # P-Net, R-Net, O-Net acceptance scores (paper defaults)
PYRAMID_FACTOR = 0.709  # image pyramid step (paper default)
PNET_CELL, PNET_STRIDE = 12, 2


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))  # B x 10 x H/2 x W/2
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))  # B x 32 x h x w
        prob = torch.softmax(self.conv4_1(x), dim=1)  # B x 2 x h x w
        return self.conv4_2(x), prob  # box offsets B x 4 x h x w, face probability


def _caffe_flatten(x: torch.Tensor) -> torch.Tensor:
    # the ported Caffe weights expect the dense input in (W, H, C) order
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refine net: 24x24 candidates -> score and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))  # B x 28 x 11 x 11
        x = self.pool2(self.prelu2(self.conv2(x)))  # B x 48 x 4 x 4
        x = self.prelu3(self.conv3(x))  # B x 64 x 3 x 3
        x = self.prelu4(self.dense4(_caffe_flatten(x)))  # B x 128
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net: 48x48 candidates -> score, box offsets and 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))  # B x 32 x 23 x 23
        x = self.pool2(self.prelu2(self.conv2(x)))  # B x 64 x 10 x 10
        x = self.pool3(self.prelu3(self.conv3(x)))  # B x 64 x 4 x 4
        x = self.prelu4(self.conv4(x))  # B x 128 x 3 x 3
        x = self.prelu5(self.dense5(_caffe_flatten(x)))  # B x 256
        # offsets B x 4, landmarks B x 10 (x0..x4, y0..y4 in box units), probability B x 2
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def default_weights_dir() -> Path:
    """The ``data`` folder of the installed facenet-pytorch wheel (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "facenet-pytorch is not installed; install the wheel with --no-deps for its MTCNN "
            "weights, or set FACE_DETECT_MODEL_DIR to a folder holding pnet.pt, rnet.pt, onet.pt"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _load(net: nn.Module, path: Path) -> nn.Module:
    if not path.is_file():
        raise FileNotFoundError(f"MTCNN weights missing: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = net.state_dict()
    if set(state) != set(expected):
        raise ValueError(
            f"{path.name}: keys differ from the MTCNN layout: {sorted(set(state) ^ set(expected))}"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(
                f"{path.name}: {key} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
    net.load_state_dict(state, strict=True)
    return net.eval()


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Make boxes square around their centres (longer side)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray, plus_one: bool) -> np.ndarray:
    out = boxes.copy()
    extra = 1.0 if plus_one else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    out[:, 0:4] = boxes[:, 0:4] + offsets * np.stack([w, h, w, h], axis=1)
    return out


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    batch = np.stack(images).astype(np.float32)  # B x H x W x 3, RGB
    return torch.from_numpy((batch - 127.5) * 0.0078125).permute(0, 3, 1, 2)  # B x 3 x H x W


def _cut(image: np.ndarray, boxes: np.ndarray, side: int) -> list[np.ndarray]:
    """Crops of the (integer, 1-based inclusive) boxes, zero-padded outside, resized to side."""
    h, w = image.shape[:2]
    out = []
    for x1, y1, x2, y2 in np.trunc(boxes[:, :4]).astype(np.int64):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        patch = np.zeros((bh, bw, 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
        if sx2 >= sx1 and sy2 >= sy1:
            patch[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = image[
                sy1 - 1 : sy2, sx1 - 1 : sx2
            ]
        out.append(cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA))
    return out


class MtcnnDetector:
    """Three-stage MTCNN cascade on RGB uint8 images; thread-safe for inference (no_grad, eval)."""

    name = "mtcnn"

    def __init__(self, weights_dir: Path | None = None, threshold: float = STAGE_THRESHOLDS[2]):
        folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
        self.pnet = _load(PNet(), folder / "pnet.pt")
        self.rnet = _load(RNet(), folder / "rnet.pt")
        self.onet = _load(ONet(), folder / "onet.pt")
        self.thresholds = (STAGE_THRESHOLDS[0], STAGE_THRESHOLDS[1], threshold)

    @torch.inference_mode()
    def detect(self, image: np.ndarray, min_face_px: int = 20) -> list[Detection]:
        """All faces of an H x W x 3 RGB uint8 image whose longer box side is at least
        ``min_face_px``, largest first."""
        boxes = self._propose(image, max(12, int(min_face_px)))
        if boxes.shape[0]:
            boxes = self._refine(image, boxes)
        if not boxes.shape[0]:
            return []
        boxes, points = self._output(image, boxes)
        found = [
            Detection(
                box=b[:4].astype(np.float64), score=float(b[4]), landmarks=p.astype(np.float64)
            )
            for b, p in zip(boxes, points)
            if max(b[2] - b[0], b[3] - b[1]) >= min_face_px
        ]
        return sorted(found, key=lambda d: -d.area)

    def _scales(self, h: int, w: int, min_face_px: int) -> list[float]:
        m = PNET_CELL / min_face_px
        side, scales = min(h, w) * m, []
        while side >= PNET_CELL:
            scales.append(m * PYRAMID_FACTOR ** len(scales))
            side *= PYRAMID_FACTOR
        return scales

    def _propose(self, image: np.ndarray, min_face_px: int) -> np.ndarray:
        h, w = image.shape[:2]
        found = []
        for scale in self._scales(h, w, min_face_px):
            size = (int(w * scale + 1), int(h * scale + 1))
            scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            offsets, prob = self.pnet(_to_tensor([scaled]))
            score = prob[0, 1].numpy()  # h' x w'
            ys, xs = np.nonzero(score >= self.thresholds[0])
            if not ys.size:
                continue
            cell = np.stack([xs, ys], axis=1).astype(np.float64)
            q1 = np.floor((PNET_STRIDE * cell + 1) / scale)
            q2 = np.floor((PNET_STRIDE * cell + PNET_CELL) / scale)
            reg = offsets[0][:, ys, xs].numpy().T  # K x 4
            cand = np.hstack([q1, q2, score[ys, xs][:, None], reg])
            found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 5))
        cand = np.vstack(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        boxes = _regress(cand[:, :5], cand[:, 5:9], plus_one=False)
        return _square(boxes)

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        offsets, prob = self.rnet(_to_tensor(_cut(image, boxes, 24)))
        score = prob[:, 1].numpy()
        keep = score > self.thresholds[1]
        boxes = np.hstack([boxes[keep, :4], score[keep, None]])
        offsets = offsets.numpy()[keep]
        kept = nms(boxes[:, :4], boxes[:, 4], 0.7)
        return _square(_regress(boxes[kept], offsets[kept], plus_one=True))

    def _output(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offsets, marks, prob = self.onet(_to_tensor(_cut(image, boxes, 48)))
        score = prob[:, 1].numpy()
        keep = score > self.thresholds[2]
        boxes = np.hstack([boxes[keep, :4], score[keep, None]])
        marks, offsets = marks.numpy()[keep], offsets.numpy()[keep]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        px = w[:, None] * marks[:, 0:5] + boxes[:, 0:1] - 1
        py = h[:, None] * marks[:, 5:10] + boxes[:, 1:2] - 1
        points = np.stack([px, py], axis=2)  # K x 5 x 2
        boxes = _regress(boxes, offsets, plus_one=True)
        kept = nms(boxes[:, :4], boxes[:, 4], 0.7, mode="min")
        return boxes[kept], points[kept]
