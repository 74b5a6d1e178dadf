"""Environment parsing fails early with messages that name the variable and the expectation."""

from __future__ import annotations

import pytest

from services.common.config import (
    ConfigError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_port,
    env_str,
)


def test_values_parse_and_defaults_apply() -> None:
    env = {"A": "7", "B": " yes ", "C": "2.5", "D": "CUDA", "E": ""}
    assert env_int(env, "A", 1, minimum=0) == 7
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
        (lambda e: env_float(e, "NAN", 1.0), "NAN='nan': expected a number"),
        (lambda e: env_port(e, "P", 1), "P='70000': expected a value <= 65535"),
    ],
)
def test_bad_values_name_the_variable(call, fragment) -> None:
    env = {"X": "abc", "N": "0", "NAN": "nan", "P": "70000"}
    with pytest.raises(ConfigError) as info:
        call(env)
    assert fragment in str(info.value)
