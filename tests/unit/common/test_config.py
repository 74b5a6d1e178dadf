"""Environment parsing fails early with messages that name the variable and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import (
    DEFAULT_BIND_HOST,
    ConfigError,
    env_bind_host,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_port,
    env_str,
)


def test_values_parse_and_defaults_apply() -> None:
    env = {"A": "7", "B": " yes ", "C": "2.5", "D": "CUDA", "E": ""}
    env |= {"NEG": "-3", "PLUS": "+4", "F1": ".5", "F2": "3.", "F3": "-1e-3", "F4": "2E2"}
    assert env_int(env, "A", 1, minimum=0) == 7
    assert (env_int(env, "NEG", 0), env_int(env, "PLUS", 0)) == (-3, 4)
    assert [env_float(env, k, 0.0) for k in ("F1", "F2", "F3", "F4")] == [0.5, 3.0, -0.001, 200.0]
    assert env_bool(env, "B", False) is True
    assert env_float(env, "C", 0.0) == 2.5
    assert env_choice(env, "D", ("cpu", "cuda", "auto"), "auto") == "cuda"
    assert env_str(env, "E", "fallback") == "fallback"  # blank counts as unset
    assert env_port(env, "MISSING", 50051) == 50051


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda e: env_int(e, "X", 1), "X='abc': expected an integer"),
        (lambda e: env_int(e, "N", 1, minimum=1), "N='0': expected a value >= 1"),
        (lambda e: env_bool(e, "X", True), "expected one of 1/true/yes/on"),
        (lambda e: env_choice(e, "X", ("a", "b"), "a"), "expected one of a, b"),
        (lambda e: env_str(e, "REQUIRED"), "REQUIRED=<unset>: expected a value"),
        (lambda e: env_float(e, "NAN", 1.0), "NAN='nan': expected a finite number"),
        (lambda e: env_float(e, "INF", 1.0), "INF='inf': expected a finite number"),
        (lambda e: env_port(e, "P", 1), "P='70000': expected a value <= 65535"),
        (lambda e: env_int(e, "ARABIC", 1), "ARABIC='١٢': expected an integer (ASCII digits)"),
        (lambda e: env_int(e, "UNDER", 1), "UNDER='1_000': expected an integer"),
        (lambda e: env_port(e, "WIDE", 1), "WIDE='８０': expected an integer"),
        (lambda e: env_float(e, "FA", 1.0), "FA='١.٥': expected a finite number"),
        (lambda e: env_float(e, "FU", 1.0), "FU='1_0.5': expected a finite number"),
        (lambda e: env_float(e, "BIG", 1.0), "BIG='1e999': expected a finite number"),
    ],
)
def test_bad_values_name_the_variable(call, fragment) -> None:
    env = {"X": "abc", "N": "0", "NAN": "nan", "INF": "inf", "P": "70000", "ARABIC": "١٢"}
    env |= {"UNDER": "1_000", "WIDE": "８０", "FA": "١.٥", "FU": "1_0.5", "BIG": "1e999"}
    with pytest.raises(ConfigError) as info:
        call(env)
    assert fragment in str(info.value)


def test_bind_host_prefers_the_service_variable_then_the_common_one() -> None:
    assert env_bind_host({}, "ENCODER") == DEFAULT_BIND_HOST == "0.0.0.0"
    assert env_bind_host({"BIND_HOST": "127.0.0.1"}, "ENCODER") == "127.0.0.1"
    both = {"BIND_HOST": "0.0.0.0", "ENCODER_BIND_HOST": " 127.0.0.1 "}
    assert env_bind_host(both, "ENCODER") == "127.0.0.1"
    assert env_bind_host(both, "ANIMATOR") == "0.0.0.0"
    assert env_bind_host({"BIND_HOST": "[::1]"}, "X") == "::1"  # brackets are dropped
    assert env_bind_host({"BIND_HOST": "0:0::0"}, "X") == "::"  # canonical form
    assert env_bind_host({"X_BIND_HOST": ""}, "X", default="127.0.0.1") == "127.0.0.1"


@pytest.mark.parametrize("value", ["localhost", "example.com", "127.0.0.1:50051", "300.1.1.1", "*"])
def test_bind_host_must_be_an_ip_literal(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        env_bind_host({"FACE_DETECT_BIND_HOST": value}, "FACE_DETECT")
    assert f"FACE_DETECT_BIND_HOST={value!r}: expected an IP address" in str(info.value)


def test_every_service_config_reads_its_bind_host(tmp_path: Path) -> None:
    from services.animator.config import AnimatorConfig
    from services.encoder.config import EncoderConfig
    from services.face_detect.config import FaceDetectConfig

    env = {"BIND_HOST": "::", "ANIMATOR_WEIGHTS_DIR": str(tmp_path), "ANIMATOR_DEVICE": "cpu"}
    configs = {
        "FACE_DETECT": FaceDetectConfig,
        "ANIMATOR": AnimatorConfig,
        "ENCODER": EncoderConfig,
    }
    for prefix, cls in configs.items():
        assert cls.from_env(env).bind_host == "::"
        own = {**env, f"{prefix}_BIND_HOST": "127.0.0.1"}
        assert cls.from_env(own).bind_host == "127.0.0.1"
        with pytest.raises(ConfigError, match=f"{prefix}_BIND_HOST"):
            cls.from_env({**env, f"{prefix}_BIND_HOST": "all"})
