"""gRPC adapter of face_detect: protos <-> FaceDetector / DrivingTracker, errors -> status codes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace

import cv2
import numpy as np
from dynamics.v1 import common_pb2, face_detect_pb2, face_detect_pb2_grpc

from services.common.canvas import canvas_from_message
from services.common.errors import InvalidInputError, UnavailableError, handle_errors
from services.common.media import array_to_raw, image_message_to_array, raw_to_array
from services.face_detect import metrics
from services.face_detect.config import FaceDetectConfig
from services.face_detect.detector import FaceDetector, FaceRatios
from services.face_detect.tracker import DrivingTracker, TrackedFrame
from services.face_detect.types import Detection

logger = logging.getLogger(__name__)

SERVICE_NAME = face_detect_pb2.DESCRIPTOR.services_by_name["FaceDetectService"].full_name


def landmarks_pb(points: np.ndarray | None) -> common_pb2.Landmarks:
    if points is None:
        return common_pb2.Landmarks()
    return common_pb2.Landmarks(count=int(points.shape[0]), xy=points.reshape(-1).tolist())


def ratios_pb(ratios: FaceRatios | None) -> common_pb2.FaceRatios:
    """Ratios, or all zeros when unknown (no 203-point model; docs/face_detect.md)."""
    if ratios is None:
        return common_pb2.FaceRatios()
    return common_pb2.FaceRatios(
        eye_left=ratios.eye_left, eye_right=ratios.eye_right, lip=ratios.lip
    )


def face_pb(face: Detection) -> common_pb2.FaceBox:
    x1, y1, x2, y2 = (float(v) for v in face.box)
    return common_pb2.FaceBox(
        x1=x1, y1=y1, x2=x2, y2=y2, score=face.score, landmarks=landmarks_pb(face.landmarks)
    )


def detect_all(detector: FaceDetector, image: np.ndarray, max_dim: int) -> list[Detection]:
    """All faces, searched on a copy no larger than max_dim, reported in the image's pixels
    (boxes clipped to the image)."""
    h, w = image.shape[:2]
    scale = min(1.0, max_dim / max(h, w))
    if scale >= 1.0:
        faces = detector.detect(image)
    else:
        small = cv2.resize(
            image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA
        )
        faces = [f.shifted(0.0, 0.0, 1.0 / scale) for f in detector.detect(small)]
    return [replace(f, box=np.clip(f.box, 0.0, [w, h, w, h])) for f in faces]


class FaceDetectServicer(face_detect_pb2_grpc.FaceDetectServiceServicer):
    """Detect, DetectSource and TrackDriving over one loaded FaceDetector."""

    def __init__(self, config: FaceDetectConfig, detector: FaceDetector | None = None) -> None:
        self.config = config
        self._detector = detector
        self._ready = threading.Event()
        if detector is not None:
            self._ready.set()

    def attach(self, detector: FaceDetector) -> None:
        """Hand over the loaded detector (called by __main__ before SERVING)."""
        self._detector = detector
        self._ready.set()

    @property
    def detector(self) -> FaceDetector:
        if not self._ready.is_set():
            raise UnavailableError("face detector is still loading", reason="loading")
        return self._detector

    @handle_errors
    def Detect(self, request, context):
        detector = self.detector
        start = time.perf_counter()
        image = image_message_to_array(request.image)
        faces = detect_all(detector, image, self.config.source_max_dim)
        metrics.SECONDS.labels(kind="source").observe(time.perf_counter() - start)
        metrics.FACES.inc(len(faces))
        h, w = image.shape[:2]
        return face_detect_pb2.DetectResponse(
            width=w, height=h, faces=[face_pb(f) for f in faces], backend=detector.name
        )

    @handle_errors
    def DetectSource(self, request, context):
        detector = self.detector
        if request.source_max_dim < 0 or request.face_index < 0:
            raise InvalidInputError(
                "source_max_dim and face_index must be >= 0", reason="bad_request"
            )
        start = time.perf_counter()
        max_dim = request.source_max_dim or self.config.source_max_dim
        canvas = canvas_from_message(request.image, max_dim)
        source = detector.analyse_canvas(canvas, face_index=request.face_index)
        metrics.SECONDS.labels(kind="source").observe(time.perf_counter() - start)
        metrics.FACES.inc(source.faces_found)
        height, width = canvas.shape[:2]
        # The canvas itself stays here: the encoder rebuilds it from the same photo file.
        return face_detect_pb2.DetectSourceResponse(
            canvas_width=width,
            canvas_height=height,
            source_max_dim=max_dim,
            crop=array_to_raw(source.crop),
            crop_to_canvas=common_pb2.Matrix3x3(values=source.m_c2o.reshape(-1).tolist()),
            landmarks=landmarks_pb(source.landmarks),
            ratios=ratios_pb(source.ratios),
            face=face_pb(source.face),
            faces_found=source.faces_found,
        )

    @handle_errors
    def TrackDriving(self, request_iterator, context):
        detector = self.detector
        yield from self._track(detector, iter(request_iterator))

    def _track(self, detector: FaceDetector, requests: Iterator) -> Iterable:
        first = next(requests, None)
        if first is None or first.WhichOneof("item") != "config":
            raise InvalidInputError(
                "TrackDriving must start with a TrackDrivingConfig message", reason="bad_request"
            )
        cfg = first.config
        tracker = DrivingTracker(
            detector,
            cfg.width,
            cfg.height,
            crop_driving_video=cfg.crop_driving_video,
            box_mode=self.config.driving_box_mode,
            box_frames=self.config.driving_box_frames,
            max_buffered=self.config.max_buffered_frames,
            total_frames=cfg.total_frames,
        )
        for request in requests:
            if request.WhichOneof("item") != "frame":
                raise InvalidInputError(
                    "only frames may follow the config message", reason="bad_request"
                )
            start = time.perf_counter()
            ready = tracker.push(request.frame.index, raw_to_array(request.frame.image))
            metrics.SECONDS.labels(kind="driving").observe(time.perf_counter() - start)
            yield from (self._frame_pb(t) for t in ready)
        yield from (self._frame_pb(t) for t in tracker.finish())

    @staticmethod
    def _frame_pb(tracked: TrackedFrame) -> face_detect_pb2.TrackDrivingResponse:
        metrics.FRAMES.inc()
        if tracked.face_found:
            metrics.FACES.inc()
        return face_detect_pb2.TrackDrivingResponse(
            index=tracked.index,
            crop=array_to_raw(tracked.crop),
            ratios=ratios_pb(tracked.ratios),
            landmarks=landmarks_pb(tracked.landmarks),
            face_found=tracked.face_found,
        )
