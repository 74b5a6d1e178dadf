"""Jobs queued by an earlier gateway: their stored spec (options as a plain JSON object, and the
`sequential` flag the REST schema used to accept) still runs, with typed options."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dynamics.v1 import common_pb2
from fastapi.testclient import TestClient

from services.gateway.domain import AnimationOptions, Job, JobFailed, JobSpec
from services.gateway.jobs.inputs import job_spec
from services.gateway.pipeline.options import animation_proto
from tests.unit.gateway.gateway_harness import StandInOrchestrator, build_gateway, wait_for

# A spec as the intake wrote it before the options were typed: every option by name, and
# `sequential` beside them.
EARLIER_SPEC = """{"source": {"path": "%(source)s", "url": null},
 "driving": {"path": "%(driving)s", "url": null}, "seconds": 2.0, "source_max_dim": 512,
 "options": {"relative_motion": false, "driving_option": "pose-friendly",
  "driving_multiplier": 1.5, "stitching": true, "paste_back": false, "normalize_lip": false,
  "eye_retargeting": false, "lip_retargeting": true, "region": "lip"},
 "sequential": true}"""
EXPECTED = AnimationOptions(
    relative_motion=False,
    driving_option="pose-friendly",
    driving_multiplier=1.5,
    paste_back=False,
    lip_retargeting=True,
    region="lip",
)


@dataclass
class Recording(StandInOrchestrator):
    specs: list[JobSpec] = field(default_factory=list)

    def run(self, spec, work_dir, *, on_progress, cancel):
        self.specs.append(spec)
        return super().run(spec, work_dir, on_progress=on_progress, cancel=cancel)


def _earlier_spec(tmp_path: Path) -> dict:
    (tmp_path / "me.png").write_bytes(b"photo")
    (tmp_path / "hero.mp4").write_bytes(b"video")
    return json.loads(
        EARLIER_SPEC % {"source": tmp_path / "me.png", "driving": tmp_path / "hero.mp4"}
    )


def _job(spec: dict) -> Job:
    return Job(
        id="j1",
        owner="o",
        status="running",
        stage="queued",
        spec=spec,
        created_at=0.0,
        updated_at=0.0,
    )


def test_an_earlier_spec_reads_as_typed_options(tmp_path: Path) -> None:
    spec = job_spec(_job(_earlier_spec(tmp_path)))
    assert spec.options == EXPECTED and (spec.seconds, spec.source_max_dim) == (2.0, 512)
    proto = animation_proto(spec.options)
    assert proto.absolute_motion and proto.lip_retargeting
    assert proto.driving_option == common_pb2.AnimationOptions.POSE_FRIENDLY
    assert proto.region == common_pb2.AnimationOptions.LIP


def test_a_spec_without_options_gets_the_defaults(tmp_path: Path) -> None:
    stored = _earlier_spec(tmp_path)
    del stored["options"]
    assert job_spec(_job(stored)).options == AnimationOptions()


@pytest.mark.parametrize("options", [{"region": "nose"}, {"warp": 1}, {"driving_multiplier": 0}])
def test_a_stored_option_this_version_refuses_fails_the_job(tmp_path: Path, options) -> None:
    stored = _earlier_spec(tmp_path)
    stored["options"] = options
    with pytest.raises(JobFailed) as err:
        job_spec(_job(stored))
    assert err.value.code == "bad_option" and not err.value.retryable


def test_a_job_queued_by_an_earlier_gateway_runs(tmp_path: Path) -> None:
    """The row is written as the earlier gateway wrote it; a worker of this one claims it and
    runs it (pipelined: the orchestrator has no per-job sequential switch) to a result."""
    runner = Recording()
    gateway = build_gateway(tmp_path / "gw", runner)
    store = gateway.state.store
    try:
        with TestClient(gateway.app):
            job, created = store.create("someone", _earlier_spec(tmp_path))
            assert created
            done = wait_for(lambda: (j := store.get(job.id)) and j.terminal and j)
            bad, _ = store.create(
                "someone", {**_earlier_spec(tmp_path), "options": {"region": "nose"}}
            )
            failed = wait_for(lambda: (j := store.get(bad.id)) and j.terminal and j)
    finally:
        gateway.close()
    assert done.status == "succeeded", (done.error_code, done.error_message)
    assert runner.specs[0].job_id == job.id and runner.specs[0].options == EXPECTED
    assert (failed.status, failed.error_code) == ("failed", "bad_option")
    assert "region" in failed.error_message and len(runner.specs) == 1
