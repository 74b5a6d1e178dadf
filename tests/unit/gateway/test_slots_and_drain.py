"""Job slots and drain time come from the environment; the app drains for GATEWAY_DRAIN_S."""

from __future__ import annotations

import pytest

from services.common.config import ConfigError
from services.gateway.config import GatewayConfig
from services.gateway.runtime import Gateway
from tests.unit.gateway.gateway_harness import gateway_config

BASE = {"GATEWAY_AUTH_MODE": "none"}


def test_defaults_keep_one_animator_busy_and_let_a_job_finish():
    config = GatewayConfig.from_env(BASE)
    assert config.workers == 3
    assert config.drain_s == 120.0


def test_drain_and_slots_are_read_and_checked():
    config = GatewayConfig.from_env({**BASE, "GATEWAY_WORKERS": "6", "GATEWAY_DRAIN_S": "330"})
    assert (config.workers, config.drain_s) == (6, 330.0)
    with pytest.raises(ConfigError, match="GATEWAY_DRAIN_S"):
        GatewayConfig.from_env({**BASE, "GATEWAY_DRAIN_S": "-1"})


def test_the_app_drains_for_the_configured_time(tmp_path):
    gateway = Gateway.build(gateway_config(tmp_path, drain_s=42.0), None)
    try:
        assert gateway.state.drain_s == 42.0
    finally:
        gateway.close()
    gateway = Gateway.build(gateway_config(tmp_path / "b", drain_s=42.0), None, drain_s=1.0)
    try:
        assert gateway.state.drain_s == 1.0
    finally:
        gateway.close()
