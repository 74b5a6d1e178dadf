"""Gateway Prometheus metrics, in a registry of their own (one per app instance)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

STAGES = ("fetch_trim", "detect", "motion", "animate", "encode", "upload")
_STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_JOB_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800)
_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class GatewayMetrics:
    """The dynamics_* series the dashboards read."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "dynamics_stage_seconds",
            "Seconds spent in each stage of a job",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.job_seconds = Histogram(
            "dynamics_job_seconds",
            "Seconds from claim to result of a successful job",
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "dynamics_queue_wait_seconds",
            "Seconds a job waited in the queue before a worker took it",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.jobs_total = Counter(
            "dynamics_jobs_total",
            "Jobs that reached a final state",
            ["status"],
            registry=r,
        )
        self.queue_depth = Gauge("dynamics_queue_depth", "Jobs waiting for a worker", registry=r)
        self.job_gpu_seconds = Histogram(
            "dynamics_job_gpu_seconds",
            "Accelerator seconds of one job (animator-reported, else its animate stage)",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.motion_cache_total = Counter(
            "dynamics_motion_cache_total",
            "Motion-template cache lookups",
            ["result"],
            registry=r,
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for status in ("succeeded", "failed", "cancelled"):
            self.jobs_total.labels(status=status)
        for result in ("hit", "miss"):
            self.motion_cache_total.labels(result=result)

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        """Read the queue depth from the store at every scrape."""
        self.queue_depth.set_function(lambda: float(depth()))

    def track_job_events(
        self,
        transactions: Callable[[], int],
        watchers: Callable[[], int],
        reads: Callable[[], int],
    ) -> None:
        """Counted at every scrape: the database transactions this process opened, the SSE
        streams open now, and the reads the job-event hub made for all of them."""
        self.registry.register(
            _Callback(
                (
                    "dynamics_db_transactions",
                    "counter",
                    "Database transactions this gateway process opened",
                    transactions,
                ),
                ("dynamics_sse_watchers", "gauge", "Open /events streams", watchers),
                (
                    "dynamics_job_event_reads",
                    "counter",
                    "Job reads made by the event hub for every open stream together",
                    reads,
                ),
            )
        )

    def observe_timings(self, timings: dict[str, float]) -> None:
        """Stage histograms from a finished job's timings (unknown keys are ignored)."""
        for stage in STAGES:
            if stage in timings:
                self.stage_seconds.labels(stage=stage).observe(max(0.0, float(timings[stage])))
        # Device time as the orchestrator reports it; without that, the animate stage's wall
        # time (an upper bound: the animator holds the device for the job during that stage).
        gpu = timings.get("gpu_seconds", timings.get("animate"))
        if gpu is not None:
            self.job_gpu_seconds.observe(max(0.0, float(gpu)))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Callback:
    """A collector whose samples are read from callables at scrape time."""

    def __init__(self, *series: tuple[str, str, str, Callable[[], int]]) -> None:
        self.series = series

    def collect(self):
        for name, kind, doc, read in self.series:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc, value=float(read()))
