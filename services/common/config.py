"""Environment -> typed values for the per-service frozen config dataclasses.

Only the `config.py` modules read the environment. Every helper takes the mapping explicitly
(so tests pass a dict) and fails with a `ConfigError` that names the variable, the bad value
and what was expected, so a pod with a typo crashes at start with a readable message.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting from the environment is missing or malformed."""

    def __init__(self, name: str, value: str | None, expected: str) -> None:
        shown = "<unset>" if value is None else repr(value)
        super().__init__(f"configuration error: {name}={shown}: expected {expected}")
        self.name = name
        self.value = value


_ASCII_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    """A string setting; `default=None` makes it required."""
    value = _raw(environ, name)
    if value is None:
        if default is None:
            raise ConfigError(name, None, "a value (this setting is required)")
        return default
    return value


def env_optional(environ: Mapping[str, str], name: str) -> str | None:
    """A string setting that may be absent."""
    return _raw(environ, name)


def env_int(
    environ: Mapping[str, str],
    name: str,
    default: int | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """An integer setting within [minimum, maximum]."""
    value = _raw(environ, name)
    if value is None:
        if default is None:
            raise ConfigError(name, None, "an integer (this setting is required)")
        return default
    if not _ASCII_INT.fullmatch(value):  # int() would take "١٢" and "1_000"
        raise ConfigError(name, value, "an integer (ASCII digits)")
    number = int(value, 10)
    _check_range(name, value, number, minimum, maximum)
    return number


def env_float(
    environ: Mapping[str, str],
    name: str,
    default: float | None = None,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """A floating-point setting within [minimum, maximum]."""
    value = _raw(environ, name)
    if value is None:
        if default is None:
            raise ConfigError(name, None, "a number (this setting is required)")
        return default
    if not _ASCII_FLOAT.fullmatch(value):  # float() would take "١.٥", "1_0" and "nan"
        raise ConfigError(name, value, "a finite number (ASCII digits)")
    number = float(value)
    if not math.isfinite(number):  # 1e999
        raise ConfigError(name, value, "a finite number")
    _check_range(name, value, number, minimum, maximum)
    return number


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean setting: 1/true/yes/on or 0/false/no/off."""
    value = _raw(environ, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, value, "one of 1/true/yes/on or 0/false/no/off")


def env_choice(
    environ: Mapping[str, str], name: str, choices: tuple[str, ...], default: str
) -> str:
    """One of a fixed set of strings (case-insensitive)."""
    value = _raw(environ, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered not in choices:
        raise ConfigError(name, value, "one of " + ", ".join(choices))
    return lowered


def env_path(
    environ: Mapping[str, str], name: str, default: str | None = None, *, must_exist: bool = False
) -> Path:
    """A filesystem path; `must_exist` checks it at start-up."""
    path = Path(env_str(environ, name, default)).expanduser()
    if must_exist and not path.exists():
        raise ConfigError(name, str(path), "an existing path")
    return path


def env_port(environ: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port; 0 asks the OS for a free one (tests)."""
    return env_int(environ, name, default, minimum=0, maximum=65535)


# Address a service's gRPC and metrics servers listen on when nothing says otherwise: every IPv4
# interface, which is what a container needs (its pod IP). `dynamics up` sets 127.0.0.1; the Helm
# chart sets BIND_HOST explicitly.
DEFAULT_BIND_HOST = "0.0.0.0"


def env_bind_host(environ: Mapping[str, str], prefix: str, default: str = DEFAULT_BIND_HOST) -> str:
    """The listen address of a service: `<PREFIX>_BIND_HOST`, else `BIND_HOST`, else `default`.

    An IP address literal (`127.0.0.1`, `0.0.0.0`, `::1`, `::`; brackets around IPv6 allowed),
    returned without brackets. Host names are refused: what a name resolves to decides which
    interfaces are exposed, and a bind address should say that itself.
    """
    for name in (f"{prefix}_BIND_HOST", "BIND_HOST"):
        value = _raw(environ, name)
        if value is None:
            continue
        bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        try:
            return str(ipaddress.ip_address(bare))
        except ValueError:
            raise ConfigError(
                name, value, "an IP address to listen on, e.g. 127.0.0.1, 0.0.0.0 or ::"
            ) from None
    return default


def _check_range(name, raw, number, minimum, maximum) -> None:
    if minimum is not None and number < minimum:
        raise ConfigError(name, raw, f"a value >= {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(name, raw, f"a value <= {maximum}")
