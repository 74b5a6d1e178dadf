"""Hostile `.pkl` motion templates: code-execution gadgets in every pickle spelling, resource
bombs, malformed structures and bad numbers. Each is refused with InvalidInputError
(reason bad_template) and nothing runs; read from bytes and from a file on disk."""

from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from services.animator import templates
from services.common.errors import InvalidInputError

MARKER = "RELIABILITY_PWNED"


def _frame(n_kp: int = 21, **over) -> dict:
    frame = {
        "R": np.eye(3, dtype=np.float32)[None],
        "scale": np.ones((1, 1), np.float32),
        "exp": np.zeros((1, n_kp, 3), np.float32),
        "t": np.zeros((1, 3), np.float32),
    }
    frame.update(over)
    return frame


def _template(frames: list, eyes=None, lips=None, **extra) -> dict:
    n = len(frames)
    eyes = [np.array([[0.3, 0.3]], np.float32)] * n if eyes is None else eyes
    lips = [np.array([[0.1]], np.float32)] * n if lips is None else lips
    return {
        "n_frames": n,
        "output_fps": 25,
        "motion": frames,
        "c_eyes_lst": eyes,
        "c_lip_lst": lips,
        **extra,
    }


def _op_global(module: str, name: str, arg: str) -> bytes:
    """Protocol-0 GLOBAL + REDUCE: module.name(arg)."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def _stack_global(module: str, name: str, arg: str) -> bytes:
    """Protocol-4 STACK_GLOBAL + REDUCE."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return b"\x8c" + bytes([len(raw)]) + raw

    return b"\x80\x04" + s(module) + s(name) + b"\x93" + s(arg) + b"\x85R."


def _gadgets(marker: str) -> dict[str, bytes]:
    touch = f"touch {marker}"
    code = f"open({marker!r},'w').write('x')"
    return {
        "global-os-system": _op_global("os", "system", touch),
        "global-posix-system": _op_global("posix", "system", touch),
        "global-builtins-eval": _op_global("builtins", "eval", code),
        "global-builtins-exec": _op_global("builtins", "exec", code),
        "global-subprocess-getoutput": _op_global("subprocess", "getoutput", touch),
        "global-pty-spawn": _op_global("pty", "spawn", touch),
        "global-importlib": _op_global("importlib", "import_module", "os"),
        "global-numpy-load": _op_global("numpy", "load", marker),
        "global-numpy-testing-runstring": _op_global(
            "numpy.testing._private.utils", "runstring", code
        ),
        "stack-global-os-system": _stack_global("os", "system", touch),
        "stack-global-getattr": _stack_global("builtins", "getattr", "x"),
        "stack-global-dunder-import": _stack_global("builtins", "__import__", "os"),
        "inst-os-system": f"(S'{touch}'\nios\nsystem\n.".encode(),
        "obj-opcode": b"\x80\x02cos\nsystem\nq\x00)\x81q\x01.",
        "build-setstate": b"\x80\x02cos\nsystem\n)\x81}b.",
        "persistent-id": b"\x80\x02Pfoo\n.",
        "ext-code": b"\x80\x02\x82\x01.",
        "next-buffer-oob": b"\x80\x05\x97.",
        "reduce-in-motion": b"\x80\x02}(X\x06\x00\x00\x00motion]"
        + _op_global("os", "system", touch)[:-1]
        + b"au.",
    }


def _bombs_and_shapes() -> dict[str, bytes]:
    deep: list = []
    for _ in range(40):
        deep = [deep]
    nested_dict: dict = {}
    for _ in range(40):
        nested_dict = {"motion": nested_dict}
    return {
        "deep-list-40": pickle.dumps(_template([_frame()], extra=deep)),
        "deep-dict-40": pickle.dumps(nested_dict),
        "deep-recursion-opcodes": b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b".",
        "object-dtype-array": pickle.dumps(_template([_frame(exp=np.array([1, "x"], object))])),
        "not-a-dict": pickle.dumps([1, 2, 3]),
        "no-motion": pickle.dumps({"n_frames": 1}),
        "empty-motion": pickle.dumps(_template([])),
        "motion-is-dict": pickle.dumps({**_template([_frame()]), "motion": {"0": _frame()}}),
        "unequal-lists": pickle.dumps(_template([_frame(), _frame()], eyes=[np.zeros((1, 2))])),
        "frame-is-string": pickle.dumps(_template(["frame"])),
        "missing-rotation": pickle.dumps(
            _template([{k: v for k, v in _frame().items() if k != "R"}])
        ),
        "rotation-wrong-shape": pickle.dumps(_template([_frame(R=np.zeros((2, 2), np.float32))])),
        "exp-wrong-shape": pickle.dumps(_template([_frame(exp=np.zeros((1, 5), np.float32))])),
        "exp-string": pickle.dumps(_template([_frame(exp="zeros")])),
        "nan-expression": pickle.dumps(
            _template([_frame(exp=np.full((1, 21, 3), np.nan, np.float32))])
        ),
        "inf-scale": pickle.dumps(_template([_frame(scale=np.full((1, 1), np.inf, np.float32))])),
        "eyes-wrong-shape": pickle.dumps(_template([_frame()], eyes=[np.zeros((3, 3))])),
        "fps-string": pickle.dumps({**_template([_frame()]), "output_fps": "fast"}),
        "fps-zero": pickle.dumps({**_template([_frame()]), "output_fps": 0}),
        "fps-negative": pickle.dumps({**_template([_frame()]), "output_fps": -25}),
        "truncated": pickle.dumps(_template([_frame()]))[:200],
        "empty-file": b"",
        "not-a-pickle": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        "oversized": b"\x80\x04" + b"N" * (templates.MAX_TEMPLATE_BYTES + 1),
    }


CASES = {**{f"gadget-{k}": v for k, v in _gadgets(MARKER).items()}, **_bombs_and_shapes()}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_template_is_refused_and_nothing_runs(
    name: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = CASES[name].replace(MARKER.encode(), str(tmp_path / MARKER).encode())
    path = tmp_path / "t.pkl"
    path.write_bytes(data)
    for source in (data, path):
        with pytest.raises(InvalidInputError) as err:
            templates.load_pickle_template(source)
        assert err.value.reason == "bad_template" and str(err.value)
    assert not (tmp_path / MARKER).exists() and not os.path.exists(MARKER)


def test_gadgets_are_well_formed_pickles() -> None:
    """The gadget bytes parse as pickles, so the refusals above come from the unpickler."""
    with open(os.devnull, "w") as sink:
        for data in _gadgets(MARKER).values():
            pickletools.dis(data, out=sink)
