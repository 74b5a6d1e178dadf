"""`dynamics up --animators N`: the local stack starts N animators behind one target, and the
gateway's channel spreads calls over all of them."""

from __future__ import annotations

import urllib.request

from dynamics.v1 import animator_pb2, animator_pb2_grpc

from services.cli.local_stack import LocalStack, StackConfig
from services.cli.up import build_parser, gateway_environ
from services.common.grpc_client import make_channel
from services.gateway.pipeline.clients import ANIMATOR_SERVICE
from tests.fixture_set import DEFAULT_SET
from tests.fleet.fleet import counter


def test_up_parses_animators_and_sizes_the_job_slots_from_them():
    args = build_parser().parse_args(["--animators", "3"])
    targets = type("T", (), {"face_detect": "a", "animator": "b", "encoder": "c"})()
    assert gateway_environ({}, args, targets)["GATEWAY_WORKERS"] == "9"
    args = build_parser().parse_args(["--animators", "3", "--workers", "2"])
    assert gateway_environ({}, args, targets)["GATEWAY_WORKERS"] == "2"


def test_two_animators_behind_one_target_share_the_calls(tmp_path):
    stack = LocalStack(
        StackConfig(weights_dir=DEFAULT_SET.checkpoints, animators=2, log_dir=tmp_path, grace_s=5.0)
    )
    with stack:
        target = stack.targets.animator
        animators = [s for s in stack.services.values() if s.service_kind == "animator"]
        assert [s.name for s in animators] == ["animator", "animator-2"]
        assert target == "ipv4:" + ",".join(s.target for s in animators)
        channel = make_channel(target, service_names=[ANIMATOR_SERVICE])
        try:
            stub = animator_pb2_grpc.AnimatorServiceStub(channel)
            for _ in range(8):
                stub.GetInfo(animator_pb2.GetInfoRequest(), timeout=30, wait_for_ready=True)
        finally:
            channel.close()
        calls = []
        for service in animators:
            url = f"http://127.0.0.1:{service.find_metrics_port()}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                calls.append(
                    counter(
                        reply.read().decode(),
                        "grpc_server_handled_total",
                        grpc_method="GetInfo",
                        grpc_code="OK",
                    )
                )
        print(f"GetInfo calls per animator: {calls}")
        assert sum(calls) == 8 and min(calls) >= 2, calls
