"""Driving tracking on a synthetic clip with known motion (a real face moved and turned)."""

from __future__ import annotations

import numpy as np
import pytest

from services.cli.synthetic_clip import SyntheticClip, astronaut_face
from services.common import face_geometry as g
from services.common.errors import FaceNotFoundError, InvalidInputError, ResourceExhaustedError
from services.face_detect.tracker import DrivingTracker, FaceTracker

MAX_CENTRE_ERROR_PX = 4.0


@pytest.fixture(scope="module")
def clip() -> SyntheticClip:
    return SyntheticClip(
        astronaut_face(150),
        width=480,
        height=270,
        n_frames=30,
        amplitude=(100.0, 40.0),
        max_angle=12.0,
        gap=(12,),
    )


def _run(tracker: DrivingTracker, frames) -> tuple[list, list[int]]:
    out, ready_counts = [], []
    for i, frame in enumerate(frames):
        ready = tracker.push(i, frame)
        ready_counts.append(len(ready))
        out += ready
    return out + tracker.finish(), ready_counts


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


@pytest.fixture(scope="module")
def per_frame_run(face_detector, clip) -> list:
    tracker = DrivingTracker(face_detector, clip.width, clip.height, box_mode="per_frame")
    return _run(tracker, clip.frames())[0]


def test_crop_centre_follows_known_motion(per_frame_run, clip):
    out = per_frame_run
    assert [t.index for t in out] == list(range(clip.n_frames))
    start = _centre(out[0].box)
    errors = [
        np.linalg.norm(_centre(t.box) - clip.follow(start, 0, t.index)) for t in out if t.face_found
    ]
    assert len(errors) == clip.n_frames - 1
    assert max(errors) < MAX_CENTRE_ERROR_PX, errors
    # with per_frame boxes the crop itself follows the face: frame i's crop is its own box
    i = 20
    expected = g.resize_linear(g.crop_by_box(clip.frame(i), out[i].box, dsize=512).image)
    assert np.array_equal(out[i].crop, expected)


def test_frame_without_face_then_reacquire(per_frame_run):
    out = per_frame_run
    gap = out[12]
    assert not gap.face_found and gap.box is None
    assert np.array_equal(gap.landmarks, out[11].landmarks), "previous landmarks reused"
    assert all(t.face_found for t in out[13:]), "face re-acquired after the miss"


def test_first_k_streams_after_k_frames(face_detector, clip):
    tracker = DrivingTracker(
        face_detector, clip.width, clip.height, box_mode="first_k", box_frames=5
    )
    out, ready = _run(tracker, (clip.frame(i) for i in range(10)))
    assert ready[:4] == [0, 0, 0, 0] and ready[4] == 5 and all(n == 1 for n in ready[5:])
    expected_box = g.average_boxes([t.box for t in out[:5]])
    assert np.allclose(tracker.global_box, expected_box)
    crop = g.resize_linear(g.crop_by_box(clip.frame(8), expected_box, dsize=512).image)
    assert np.array_equal(out[8].crop, crop)


def test_all_mode_is_upstreams_global_mean(face_detector, clip):
    tracker = DrivingTracker(face_detector, clip.width, clip.height, box_mode="all")
    out, ready = _run(tracker, (clip.frame(i) for i in range(8)))
    assert sum(ready) == 0 and len(out) == 8
    assert np.allclose(tracker.global_box, g.average_boxes([t.box for t in out if t.face_found]))


def test_announced_frame_count_is_enforced(face_detector, clip):
    with pytest.raises(ResourceExhaustedError, match="250 frames exceed the limit of 100"):
        DrivingTracker(
            face_detector,
            clip.width,
            clip.height,
            box_mode="all",
            max_buffered=100,
            total_frames=250,
        )
    tracker = DrivingTracker(face_detector, clip.width, clip.height, total_frames=2)
    tracker.push(0, clip.frame(0))
    with pytest.raises(InvalidInputError, match="announced 2 frames but ended after 1"):
        tracker.finish()
    tracker.push(1, clip.frame(1))
    with pytest.raises(InvalidInputError, match="beyond the announced 2 frames"):
        tracker.push(2, clip.frame(2))


def test_all_mode_buffer_limit(face_detector, clip):
    tracker = DrivingTracker(face_detector, clip.width, clip.height, box_mode="all", max_buffered=3)
    with pytest.raises(ResourceExhaustedError, match="limit of 3"):
        _run(tracker, (clip.frame(i) for i in range(5)))


def test_square_video_is_resized_whole(face_detector, astronaut_image):
    tracker = DrivingTracker(face_detector, 512, 512)
    (tracked,) = tracker.push(0, astronaut_image)
    assert np.array_equal(tracked.crop, g.resize_linear(astronaut_image))
    assert tracked.face_found and tracked.landmarks.shape == (5, 2)
    forced = DrivingTracker(face_detector, 512, 512, crop_driving_video=True, box_frames=1)
    (boxed,) = forced.push(0, astronaut_image)
    assert not np.array_equal(boxed.crop, tracked.crop)


def test_video_without_any_face(face_detector):
    tracker = DrivingTracker(face_detector, 96, 96)
    blank = np.full((96, 96, 3), 70, np.uint8)
    out = [tracker.push(i, blank)[0] for i in range(3)]
    assert not any(t.face_found for t in out)
    with pytest.raises(FaceNotFoundError, match="no face found in any of the 3 driving frames"):
        tracker.finish()


def test_order_and_size_are_checked(face_detector, clip):
    tracker = DrivingTracker(face_detector, clip.width, clip.height)
    with pytest.raises(InvalidInputError, match="expected frame 0"):
        tracker.push(1, clip.frame(0))
    with pytest.raises(InvalidInputError, match="expected 480x270x3"):
        tracker.push(0, np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InvalidInputError):
        DrivingTracker(face_detector, 0, 10)


def test_tracker_picks_the_face_nearest_the_last_one(face_detector, t1_image):
    tracker = FaceTracker(face_detector)
    first = tracker.find(t1_image)
    faces = face_detector.detect(t1_image)
    assert np.allclose(first.box, faces[0].box), "largest face on the first frame"
    tracker.last = faces[3]
    again = tracker.find(t1_image)
    assert np.linalg.norm(again.center - faces[3].center) < 5.0
