"""After the corpora (this module runs last in the folder): every service and the gateway are
still up, healthy and answering, and none logged an unhandled exception."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import healthy


@pytest.mark.parametrize("name", ["face_detect", "animator", "encoder"])
def test_grpc_service_still_serving(grpc_services, name: str) -> None:
    service = grpc_services[name]
    assert service.proc.poll() is None, "\n".join(service.lines[-20:])
    assert healthy(service, name) == "SERVING"
    crashes = [line for line in service.lines if "Traceback" in line]
    assert not crashes, crashes[0][:3000]


def test_gateway_still_answering(intake_gateway, rest) -> None:
    gateway, _ = intake_gateway
    assert gateway.proc.poll() is None
    assert rest.get("/healthz").status_code == 200
    assert rest.get("/v1/jobs", params={"limit": 1}).status_code == 200
    assert not [line for line in gateway.lines if "Traceback" in line]
