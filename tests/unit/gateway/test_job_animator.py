"""What animated a job: the orchestrator names the model its Animate replies gave and the backend,
device and dtype of the animator's kept GetInfo answer; the job store keeps that with the job
(SQLite and PostgreSQL, old tables gain the column), and the REST view shows it once the job
has succeeded. The real services are in tests/integration (test_render_e2e, test_up_e2e)."""

from __future__ import annotations

import grpc
import pytest
from dynamics.v1 import animator_pb2

from services.gateway.api.schemas import job_view
from services.gateway.delivery.result_links import ResultLinks
from services.gateway.jobs.database import Database
from services.gateway.jobs.store import JobStore
from services.gateway.net.fetch import MediaFetcher
from services.gateway.pipeline.motion_cache import NullMotionCache
from services.gateway.pipeline.orchestrator import Orchestrator

MODEL, OTHER = "a" * 32, "b" * 32
ORT_INFO = animator_pb2.AnimatorInfo(
    model_fingerprint=MODEL,
    backend="onnxruntime/CPUExecutionProvider",
    device="cpu",
    dtype="float32",
    batch_size=8,
)
SPEC = {"source": {"url": "x"}, "driving": {"url": "y"}}


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


class _Clients:
    """Stands in for ServiceClients: `animator_info` answers `info` or raises it."""

    def __init__(self, info: animator_pb2.AnimatorInfo | Exception) -> None:
        self.info, self.calls = info, 0

    def animator_info(self, timeout_s: float) -> animator_pb2.AnimatorInfo:
        self.calls += 1
        if isinstance(self.info, Exception):
            raise self.info
        return self.info


def _summary(info, model: str) -> dict[str, str]:
    orchestrator = Orchestrator(_Clients(info), NullMotionCache(), MediaFetcher())  # type: ignore[arg-type]
    return orchestrator._animator_summary(model)


def test_the_result_names_the_model_and_the_backend_of_getinfo() -> None:
    full = {
        "model": MODEL,
        "backend": "onnxruntime/CPUExecutionProvider",
        "device": "cpu",
        "dtype": "float32",
    }
    assert _summary(ORT_INFO, MODEL) == full
    # Animate named no model (an animator that predates it): GetInfo's model stands.
    assert _summary(ORT_INFO, "") == full
    torch_info = animator_pb2.AnimatorInfo(
        model_fingerprint=MODEL, backend="torch", device="cuda:0", dtype="float16"
    )
    assert _summary(torch_info, MODEL) == {
        "model": MODEL,
        "backend": "torch",
        "device": "cuda:0",
        "dtype": "float16",
    }


def test_getinfo_of_another_model_or_a_failed_one_leaves_the_backend_out(caplog) -> None:
    # Mid-rollout the kept answer may describe a replica with other weights: not this job's.
    assert _summary(ORT_INFO, OTHER) == {"model": OTHER}
    assert _summary(_Unavailable(), MODEL) == {"model": MODEL}
    assert "names no backend" in caplog.text
    assert _summary(_Unavailable(), "") == {}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return request.getfixturevalue("postgres_url")


def test_the_store_keeps_it_with_the_job_and_the_view_shows_it(database_url) -> None:
    store = JobStore(Database(database_url))
    links = ResultLinks("http://gw", "secret", ttl_s=3600)
    try:
        done, _ = store.create("u", SPEC)
        waiting, _ = store.create("u", SPEC)
        claimed = store.claim("w", 60.0, 3)
        assert claimed is not None and claimed.id == done.id
        assert store.get(done.id).animator == {}
        assert job_view(store.get(done.id), links).animator is None  # running: not yet
        animator = {
            "model": MODEL,
            "backend": "onnxruntime/CPUExecutionProvider",
            "device": "cpu",
            "dtype": "float32",
        }
        assert store.finish(
            done.id,
            claimed.lease_token,
            result_key="r",
            timings={"total": 1.0},
            cache_hit=False,
            random_weights=True,
            frames=5,
            animator=animator,
        )
        reopened = JobStore(Database(database_url))  # a restarted gateway reads it back
        try:
            job = reopened.get(done.id)
        finally:
            reopened.db.close()
        assert job.status == "succeeded" and job.animator == animator
        view = job_view(job, links).model_dump(mode="json")
        assert view["animator"] == animator
        assert job_view(store.get(waiting.id), links).model_dump(mode="json")["animator"] is None
    finally:
        store.db.close()


def test_an_older_job_table_gains_the_column(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    store = JobStore(Database(url))
    job, _ = store.create("u", SPEC)
    with store.db.transaction() as tx:
        tx.execute("ALTER TABLE jobs DROP COLUMN animator")  # as a gateway before it left it
    store.db.close()
    store = JobStore(Database(url))
    try:
        assert store.get(job.id).animator == {}
        claimed = store.claim("w", 60.0, 3)
        assert store.finish(
            job.id,
            claimed.lease_token,
            result_key="r",
            timings={},
            cache_hit=True,
            random_weights=False,
            frames=1,
            animator={"model": MODEL, "backend": "torch"},
        )
        view = job_view(store.get(job.id), ResultLinks("http://gw", "s", ttl_s=60))
        assert view.animator is not None and view.animator.backend == "torch"
        assert view.animator.device is None
    finally:
        store.db.close()
