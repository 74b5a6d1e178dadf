"""`domain.JobRunner` is what the worker pool runs jobs with: the pipeline's orchestrator and
the tests' stand-in both have its `run` signature (names, kinds, annotations, return)."""

from __future__ import annotations

import inspect

import pytest

from services.gateway.domain import JobRunner
from services.gateway.pipeline.orchestrator import Orchestrator
from tests.unit.gateway.gateway_harness import StandInOrchestrator


def _shape(function) -> list[tuple[str, object, object]]:
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.annotation) for p in signature.parameters.values()] + [
        ("return", None, signature.return_annotation)
    ]


@pytest.mark.parametrize("runner", [Orchestrator, StandInOrchestrator])
def test_runner_has_the_protocols_run(runner: type) -> None:
    assert _shape(runner.run) == _shape(JobRunner.run)


def test_the_comparison_sees_a_different_signature() -> None:
    class Other:
        def run(self, spec, work_dir, on_progress, cancel):  # keyword-only markers missing
            raise NotImplementedError

    assert _shape(Other.run) != _shape(JobRunner.run)
