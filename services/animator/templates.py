"""Motion templates: read upstream `.pkl` files safely, write our own `.npz`, convert to/from proto.

Upstream templates are pickles (SPEC §7). Unpickling runs code named by the file, so they are
read through `SafeUnpickler`, which resolves only numpy's array/dtype/scalar reconstructors and
plain containers; any other global (os.system, builtins.eval, subprocess.Popen, ...) is refused
before anything is called. Our own format is an `.npz` read with `allow_pickle=False` plus a
JSON metadata entry.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from dynamics.v1 import common_pb2

from services.animator.motion_types import DrivingFrame
from services.common.errors import InvalidInputError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

MAX_TEMPLATE_BYTES = 64 * 1024 * 1024
FORMAT_NAME = "dynamics-motion-template"
FORMAT_VERSION = 1


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles carry bytes; only this one codec is honoured."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only latin1 byte strings are allowed")
    return text.encode("latin1")


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,  # pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_bytes,  # how protocol <= 2 pickles carry bytes
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that can build only numpy arrays/dtypes/scalars and plain containers."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_unpickle(data: bytes):
    """Unpickle `data` with `SafeUnpickler`; anything else raises InvalidInputError."""
    if len(data) > MAX_TEMPLATE_BYTES:
        raise InvalidInputError("motion template is too large", reason="bad_template")
    try:
        obj = SafeUnpickler(io.BytesIO(data)).load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        UnicodeDecodeError,
    ) as exc:
        raise InvalidInputError(f"motion template rejected: {exc}", reason="bad_template") from None
    _reject_object_arrays(obj)
    return obj


def _reject_object_arrays(obj, depth: int = 0) -> None:
    if depth > 16:
        raise InvalidInputError("motion template is nested too deeply", reason="bad_template")
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise InvalidInputError("motion template holds object arrays", reason="bad_template")
    children = obj.values() if isinstance(obj, dict) else ()
    if isinstance(obj, list | tuple):
        children = obj
    for child in children:
        _reject_object_arrays(child, depth + 1)


@dataclass
class MotionTemplate:
    """Driving motion of a whole video (or one image when it has a single frame)."""

    frames: list[DrivingFrame]
    fps: Fraction = Fraction(25)
    num_kp: int = 21
    model_version: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frames)


def load_pickle_template(source: bytes | str | Path) -> MotionTemplate:
    """Read an upstream `.pkl` template (legacy keys `R_d`, `c_d_eyes_lst`, `c_d_lip_lst` too)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    raw = safe_unpickle(data)
    if not isinstance(raw, dict) or "motion" not in raw:
        raise InvalidInputError("motion template has no 'motion' list", reason="bad_template")
    eyes = _first_key(raw, "c_eyes_lst", "c_d_eyes_lst")
    lips = _first_key(raw, "c_lip_lst", "c_d_lip_lst")
    motion = raw["motion"]
    if not isinstance(motion, list) or not motion or len({len(eyes), len(motion), len(lips)}) != 1:
        raise InvalidInputError(
            "motion template lists are empty or of unequal length", reason="bad_template"
        )
    frames = [_frame_from_dict(i, m, eyes[i], lips[i]) for i, m in enumerate(motion)]
    return MotionTemplate(
        frames=frames,
        fps=_template_fps(raw.get("output_fps", 25)),
        num_kp=frames[0].expression.shape[0],
    )


def _template_fps(value: object) -> Fraction:
    """The template's `output_fps`: a positive number (upstream writes an int)."""
    try:
        fps = Fraction(int(value)) if not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):
        fps = None
    if fps is None or not 0 < fps <= 1000:
        raise InvalidInputError(
            f"motion template has an unusable output_fps {value!r}", reason="bad_template"
        )
    return fps


def _first_key(raw: dict, key: str, legacy: str) -> list:
    if key in raw:
        return list(raw[key])
    if legacy in raw:
        return list(raw[legacy])
    raise InvalidInputError(f"motion template lacks {key!r}", reason="bad_template")


def _frame_from_dict(index: int, m: dict, eye, lip) -> DrivingFrame:
    try:
        rot = m["R"] if "R" in m else m["R_d"]
        kp = m.get("kp")
        return _checked_frame(
            DrivingFrame(
                index=index,
                scale=float(np.asarray(m["scale"], dtype=np.float32).reshape(())),
                rotation=np.asarray(rot, dtype=np.float32).reshape(3, 3),
                expression=np.asarray(m["exp"], dtype=np.float32).reshape(-1, 3),
                translation=np.asarray(m["t"], dtype=np.float32).reshape(3),
                keypoints=None if kp is None else np.asarray(kp, dtype=np.float32).reshape(-1, 3),
                eye_ratio=tuple(float(v) for v in np.asarray(eye, dtype=np.float32).reshape(2)),
                lip_ratio=float(np.asarray(lip, dtype=np.float32).reshape(())),
            )
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidInputError(
            f"motion template frame {index} is malformed: {exc}", reason="bad_template"
        ) from None


def _checked_frame(frame: DrivingFrame) -> DrivingFrame:
    arrays = [
        frame.rotation,
        frame.expression,
        frame.translation,
        np.float32(frame.scale),
        np.asarray(frame.eye_ratio),
        np.float32(frame.lip_ratio),
    ]
    if frame.keypoints is not None:
        arrays.append(frame.keypoints)
        if frame.keypoints.shape != frame.expression.shape:
            raise InvalidInputError(
                f"frame {frame.index}: kp and exp shapes differ", reason="bad_motion"
            )
    if not all(np.isfinite(a).all() for a in arrays):
        raise InvalidInputError(f"frame {frame.index} has non-finite motion", reason="bad_motion")
    return frame


def save_template(template: MotionTemplate, path: str | Path) -> None:
    """Write our safe format: `.npz` of plain float32 arrays plus a JSON metadata string."""
    frames = template.frames
    arrays = {
        "scale": np.array([f.scale for f in frames], dtype=np.float32),  # N
        "rotation": np.stack([f.rotation for f in frames]).astype(np.float32),  # N×3×3
        "expression": np.stack([f.expression for f in frames]).astype(np.float32),  # N×K×3
        "translation": np.stack([f.translation for f in frames]).astype(np.float32),  # N×3
        "eye_ratio": np.array([f.eye_ratio for f in frames], dtype=np.float32),  # N×2
        "lip_ratio": np.array([f.lip_ratio for f in frames], dtype=np.float32),  # N
        "index": np.array([f.index for f in frames], dtype=np.int64),  # N
    }
    if all(f.keypoints is not None for f in frames):
        arrays["keypoints"] = np.stack([f.keypoints for f in frames]).astype(np.float32)
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "num_kp": template.num_kp,
        "fps": [template.fps.numerator, template.fps.denominator],
        "model_version": template.model_version,
    }
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)


def load_template(path: str | Path) -> MotionTemplate:
    """Read a template written by `save_template` (never unpickles)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            arrays = {k: npz[k] for k in npz.files if k != "meta"}
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInputError(
            f"not a motion template file: {exc}", reason="bad_template"
        ) from None
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise InvalidInputError("unknown motion template format/version", reason="bad_template")
    try:
        n = len(arrays["scale"])
        frames = [
            _checked_frame(
                DrivingFrame(
                    index=int(arrays["index"][i]),
                    scale=float(arrays["scale"][i]),
                    rotation=arrays["rotation"][i],
                    expression=arrays["expression"][i],
                    translation=arrays["translation"][i],
                    keypoints=arrays["keypoints"][i] if "keypoints" in arrays else None,
                    eye_ratio=(float(arrays["eye_ratio"][i, 0]), float(arrays["eye_ratio"][i, 1])),
                    lip_ratio=float(arrays["lip_ratio"][i]),
                )
            )
            for i in range(n)
        ]
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidInputError(
            f"motion template is malformed: {exc}", reason="bad_template"
        ) from None
    num, den = meta["fps"]
    return MotionTemplate(
        frames=frames,
        fps=Fraction(int(num), int(den)),
        num_kp=int(meta["num_kp"]),
        model_version=str(meta["model_version"]),
    )


def frame_to_proto(frame: DrivingFrame) -> common_pb2.FrameMotion:
    """DrivingFrame -> dynamics.v1.FrameMotion."""
    msg = common_pb2.FrameMotion(
        index=frame.index,
        scale=frame.scale,
        rotation=np.asarray(frame.rotation, dtype=np.float32).ravel().tolist(),
        expression=np.asarray(frame.expression, dtype=np.float32).ravel().tolist(),
        translation=np.asarray(frame.translation, dtype=np.float32).ravel().tolist(),
        ratios=common_pb2.FaceRatios(
            eye_left=frame.eye_ratio[0], eye_right=frame.eye_ratio[1], lip=frame.lip_ratio
        ),
    )
    if frame.keypoints is not None:
        msg.keypoints.extend(np.asarray(frame.keypoints, dtype=np.float32).ravel().tolist())
    return msg


def frame_from_proto(msg: common_pb2.FrameMotion, num_kp: int = 21) -> DrivingFrame:
    """dynamics.v1.FrameMotion -> DrivingFrame, checking every length (InvalidInputError)."""
    sizes = {"rotation": 9, "expression": 3 * num_kp, "translation": 3}
    for name, size in sizes.items():
        if len(getattr(msg, name)) != size:
            raise InvalidInputError(
                f"frame {msg.index}: {name} has {len(getattr(msg, name))} values, expected {size}",
                reason="bad_motion",
            )
    if len(msg.keypoints) not in (0, 3 * num_kp):
        raise InvalidInputError(
            f"frame {msg.index}: keypoints must be empty or {3 * num_kp} values",
            reason="bad_motion",
        )
    return _checked_frame(
        DrivingFrame(
            index=msg.index,
            scale=float(np.float32(msg.scale)),
            rotation=_as_f32(msg.rotation, (3, 3)),
            expression=_as_f32(msg.expression, (num_kp, 3)),
            translation=_as_f32(msg.translation, (3,)),
            keypoints=_as_f32(msg.keypoints, (num_kp, 3)) if len(msg.keypoints) else None,
            eye_ratio=(
                float(np.float32(msg.ratios.eye_left)),
                float(np.float32(msg.ratios.eye_right)),
            ),
            lip_ratio=float(np.float32(msg.ratios.lip)),
        )
    )


def _as_f32(values, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(shape)


def template_to_proto(template: MotionTemplate) -> common_pb2.MotionTemplate:
    """MotionTemplate -> dynamics.v1.MotionTemplate."""
    return common_pb2.MotionTemplate(
        num_kp=template.num_kp,
        fps=common_pb2.Rational(num=template.fps.numerator, den=template.fps.denominator),
        frames=[frame_to_proto(f) for f in template.frames],
        model_version=template.model_version,
    )


def template_from_proto(msg: common_pb2.MotionTemplate) -> MotionTemplate:
    """dynamics.v1.MotionTemplate -> MotionTemplate (validated)."""
    num_kp = msg.num_kp or 21
    if msg.fps.den <= 0 or msg.fps.num <= 0:
        raise InvalidInputError(
            "motion template fps must be a positive fraction", reason="bad_template"
        )
    return MotionTemplate(
        frames=[frame_from_proto(f, num_kp) for f in msg.frames],
        fps=Fraction(msg.fps.num, msg.fps.den),
        num_kp=num_kp,
        model_version=msg.model_version,
    )
