"""Motion templates: upstream pickles (incl. legacy keys), hostile pickles, safe format, proto."""

from __future__ import annotations

import os
import pickle
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from services.animator import templates
from services.common.errors import InvalidInputError


def _upstream_dict(n: int = 2, legacy: bool = False) -> dict:
    rng = np.random.default_rng(0)
    motion = [
        {
            ("R_d" if legacy else "R"): rng.normal(size=(1, 3, 3)).astype(np.float32),
            "scale": np.full((1, 1), 1.5 + i, dtype=np.float32),
            "exp": rng.normal(size=(1, 21, 3)).astype(np.float32),
            "t": rng.normal(size=(1, 3)).astype(np.float32),
        }
        for i in range(n)
    ]
    eyes = [np.array([[0.3, 0.25 + i]], dtype=np.float32) for i in range(n)]
    lips = [np.array([[0.1 * i]], dtype=np.float32) for i in range(n)]
    key = "c_d_" if legacy else "c_"
    return {
        "n_frames": n,
        "output_fps": 30,
        "motion": motion,
        f"{key}eyes_lst": eyes,
        f"{key}lip_lst": lips,
    }


def test_fixture_template_reads(lp_primary):
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    with open(lp_primary.path / "template_3f.pkl", "rb") as fh:
        ref = pickle.load(fh)  # our own trusted fixture: plain pickle only as the oracle
    assert tpl.n_frames == 3 and tpl.fps == Fraction(25) and tpl.num_kp == 21
    rows = zip(tpl.frames, ref["motion"], ref["c_eyes_lst"], ref["c_lip_lst"], strict=True)
    for frame, raw, eye, lip in rows:
        np.testing.assert_array_equal(frame.rotation, raw["R"][0])
        np.testing.assert_array_equal(frame.expression, raw["exp"][0])
        np.testing.assert_array_equal(frame.keypoints, raw["kp"][0])
        assert frame.scale == raw["scale"].item() and frame.eye_ratio == tuple(eye[0].tolist())
        assert frame.lip_ratio == lip.item()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_legacy_keys(protocol):
    raw = _upstream_dict(legacy=True)
    tpl = templates.load_pickle_template(pickle.dumps(raw, protocol=protocol))
    assert tpl.fps == 30 and tpl.n_frames == 2
    np.testing.assert_array_equal(tpl.frames[1].rotation, raw["motion"][1]["R_d"][0])
    assert tpl.frames[1].eye_ratio == pytest.approx((0.3, 1.25))
    assert tpl.frames[0].keypoints is None


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_payloads(marker: str):
    code = f"open({marker!r}, 'w').write('pwned')"
    yield _Evil(os.system, (f"touch {marker}",))
    yield _Evil(eval, (code,))
    yield _Evil(exec, (code,))
    yield _Evil(subprocess.call, (["touch", marker],))
    yield {"motion": [_Evil(os.system, (f"touch {marker}",))], "n_frames": 1}


@pytest.mark.parametrize("index", range(5))
def test_hostile_pickles_are_rejected_without_running(tmp_path, index):
    marker = str(tmp_path / "pwned")
    payload = list(_hostile_payloads(marker))[index]
    data = pickle.dumps(payload, protocol=4)
    with pytest.raises(InvalidInputError) as err:
        templates.load_pickle_template(data)
    assert err.value.reason == "bad_template"
    assert not os.path.exists(marker)


def test_object_arrays_and_garbage_are_rejected():
    raw = _upstream_dict()
    raw["motion"][0]["exp"] = np.array([1, "x"], dtype=object)
    with pytest.raises(InvalidInputError):
        templates.load_pickle_template(pickle.dumps(raw))
    with pytest.raises(InvalidInputError):
        templates.load_pickle_template(b"not a pickle at all")
    with pytest.raises(InvalidInputError):
        templates.load_pickle_template(pickle.dumps({"motion": []}))


def test_safe_format_round_trip(tmp_path, lp_primary):
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    tpl.model_version = "abc123"
    tpl.fps = Fraction(30000, 1001)
    path = tmp_path / "t.npz"
    templates.save_template(tpl, path)
    back = templates.load_template(path)
    assert back.fps == Fraction(30000, 1001) and back.model_version == "abc123"
    for a, b in zip(tpl.frames, back.frames, strict=True):
        for name in ("rotation", "expression", "translation", "keypoints"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert (a.scale, a.eye_ratio, a.lip_ratio) == (b.scale, b.eye_ratio, b.lip_ratio)
        assert a.index == b.index
    with pytest.raises(InvalidInputError):
        templates.load_template(lp_primary.path / "template_3f.pkl")


def test_proto_round_trip_and_validation(lp_primary):
    tpl = templates.load_pickle_template(lp_primary.path / "template_3f.pkl")
    msg = templates.template_to_proto(tpl)
    back = templates.template_from_proto(msg)
    for a, b in zip(tpl.frames, back.frames, strict=True):
        np.testing.assert_array_equal(a.expression, b.expression)
        np.testing.assert_array_equal(a.rotation, b.rotation)
        assert a.scale == b.scale and a.eye_ratio == b.eye_ratio
    bad = templates.frame_to_proto(tpl.frames[0])
    del bad.expression[-1]
    with pytest.raises(InvalidInputError, match="expression"):
        templates.frame_from_proto(bad)
    bad = templates.frame_to_proto(tpl.frames[0])
    bad.translation[0] = float("nan")
    with pytest.raises(InvalidInputError, match="non-finite"):
        templates.frame_from_proto(bad)
