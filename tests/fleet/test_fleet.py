"""More animators mean more throughput, and the fleet survives losing and replacing them.

Real processes (tests/fleet/fleet.py): two gateways sharing one PostgreSQL, animators behind one
DNS name resolved by gRPC's c-ares resolver, one face_detect, one encoder. The tests run in file
order on one fleet; each prints its numbers as `fleet: ...` lines (`pytest -s`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg
import pytest

from tests.fleet.fleet import Fleet, job_views, succeeded_total, wait_all_final
from tests.reliability.fault_stack import GatewayRun

pytestmark = [pytest.mark.fleet, pytest.mark.ffmpeg, pytest.mark.postgres]
JOB_TIMEOUT_S = 400.0


def _submit(fleet: Fleet, media, count: int, start: int = 0) -> list[str]:
    """`count` jobs, alternating between the gateways."""
    return [
        fleet.gateways[(start + i) % len(fleet.gateways)].submit(*media, seconds="1")
        for i in range(count)
    ]


def _queued(fleet: Fleet, jobs: list[str]) -> int:
    return sum(v["status"] == "queued" for v in job_views(fleet, jobs).values())


def _attempts(views: dict[str, dict]) -> dict[int, int]:
    return dict(sorted(Counter(v["attempts"] for v in views.values()).items()))


def _all_succeeded(views: dict[str, dict]) -> None:
    bad = {
        job: (v["status"], v.get("error")) for job, v in views.items() if v["status"] != "succeeded"
    }
    assert not bad, bad


def test_jobs_spread_over_the_animators_run_once_and_keep_them_busy(fleet: Fleet, media):
    animators = list(fleet.animators.values())
    assert len(animators) == 2
    calls_before = fleet.animate_ok()
    succeeded_before = succeeded_total(fleet)
    started = time.monotonic()
    jobs = _submit(fleet, media, 12)
    # The busy window: from both animators running an Animate to the backlog's end (no job
    # left queued), the time the fleet had more work than slots.
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not all(a.in_flight() > 0 for a in animators):
        assert time.monotonic() < deadline, "an animator never got an Animate call"
        time.sleep(0.05)
    window_start = time.monotonic()
    busy_start = {a.host: a.read()["busy_s"] for a in animators}
    # Occupancy: the share of samples in which the animator had a call (motion, Animate) running.
    samples: dict[str, list[bool]] = {a.host: [] for a in animators}
    while _queued(fleet, jobs) > 0:
        assert time.monotonic() < deadline, "the backlog never drained"
        for animator in animators:
            samples[animator.host].append(animator.working())
        time.sleep(0.05)
    window = time.monotonic() - window_start
    busy = {a.host: (a.read()["busy_s"] - busy_start[a.host]) / window for a in animators}
    occupied = {host: sum(seen) / max(1, len(seen)) for host, seen in samples.items()}
    views = wait_all_final(fleet, jobs, JOB_TIMEOUT_S)
    elapsed = time.monotonic() - started
    calls = {host: n - calls_before.get(host, 0.0) for host, n in fleet.animate_ok().items()}
    print(
        f"\nfleet: {len(jobs)} jobs over 2 gateways x {fleet.gateway_workers} slots, "
        f"2 animators: {elapsed:.1f} s, {60 * len(jobs) / elapsed:.1f} jobs/min; statuses "
        f"{dict(Counter(v['status'] for v in views.values()))}; attempts {_attempts(views)}"
    )
    print(
        f"fleet: Animate calls per animator {calls} (even split {len(jobs) / 2:.0f}, "
        f"floor {len(jobs) / 2 / 3:.1f})"
    )
    print(
        "fleet: while a backlog existed ({:.1f} s): animator busy share (device seconds / "
        "wall) {}, a call in flight in {} of samples".format(
            window,
            {host: f"{share:.0%}" for host, share in busy.items()},
            {host: f"{share:.0%}" for host, share in occupied.items()},
        )
    )
    _all_succeeded(views)
    assert all(v["attempts"] == 1 for v in views.values()), _attempts(views)
    # Exactly once: one successful Animate per job across the fleet, one success per job.
    assert sum(calls.values()) == len(jobs), calls
    assert succeeded_total(fleet) - succeeded_before == len(jobs)
    assert min(calls.values()) >= len(jobs) / len(calls) / 3, calls
    # Busy share is device seconds over wall time. Both animators share this machine's two
    # cores, so one process's device seconds stretch while the other's shrink (0.69 and 1.13 in
    # one CI run), and a sample catches one between two calls as often: the fleet's means are
    # the measure, and every animator must have been working most of the window.
    assert sum(busy.values()) / len(busy) >= 0.8, busy
    assert sum(occupied.values()) / len(occupied) >= 0.8, occupied
    assert min(occupied.values()) >= 0.5, occupied
    # Either gateway serves any job's result (shared database and storage).
    other = fleet.gateways[1]
    assert other.client.get(f"/v1/jobs/{jobs[0]}/result").status_code == 200


class Feeder:
    """Keeps `backlog` jobs queued (a steady stream at the fleet's own pace) until stopped."""

    def __init__(self, fleet: Fleet, media, backlog: int = 2) -> None:
        self.fleet, self.media, self.backlog = fleet, media, backlog
        self.jobs: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-feeder", daemon=True)

    def __enter__(self) -> Feeder:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            missing = self.backlog - _queued(self.fleet, self.jobs)
            if missing > 0:
                self.jobs += _submit(self.fleet, self.media, missing, start=len(self.jobs))
            self._stop.wait(0.5)


def test_an_added_animator_receives_queued_jobs_within_30_s(fleet: Fleet, media):
    with Feeder(fleet, media) as feeder:
        added = fleet.start_animator()  # loads while the others work through the backlog
        fleet.wait_ready_and_publish(added)
        published = time.monotonic()
        queued_then = _queued(fleet, feeder.jobs)
        while added.read().get("animate_started", 0.0) == 0:
            assert time.monotonic() - published < 30, "the added animator got no job in 30 s"
            time.sleep(0.1)
        first_call = time.monotonic() - published
    views = wait_all_final(fleet, feeder.jobs, JOB_TIMEOUT_S)
    calls = added.read()["animate_ok"]
    print(
        f"\nfleet: animator {added.host} joined the name with {queued_then} jobs queued: "
        f"first Animate {first_call:.1f} s later; it served {calls:.0f} of "
        f"{len(feeder.jobs)} jobs"
    )
    _all_succeeded(views)
    assert queued_then > 0


def _wait_busy(animator, timeout: float = 120.0) -> float:
    deadline = time.monotonic() + timeout
    while (in_flight := animator.in_flight()) <= 0:
        assert time.monotonic() < deadline, f"{animator.host} never ran an Animate"
        time.sleep(0.02)
    return in_flight


def test_animators_removed_by_sigterm_and_sigkill_lose_no_job(fleet: Fleet, media):
    while len(fleet.animators) < 3:
        fleet.add_animator()
    drained, killed = list(fleet.animators.values())[:2]
    with Feeder(fleet, media) as feeder:
        # SIGTERM (drain): out of the name first, then running calls finish on it.
        drained_in_flight = _wait_busy(drained)
        fleet.drain_animator(drained.host)
        while drained.process.proc.poll() is None:
            drained.read()
            time.sleep(0.05)
        drained_code = drained.process.proc.returncode
        final = drained.last
        # A replacement joins; then another animator is lost with jobs running on it.
        fleet.add_animator()
        killed_in_flight = _wait_busy(killed)
        fleet.kill_animator(killed.host)
    views = wait_all_final(fleet, feeder.jobs, JOB_TIMEOUT_S)
    retried = sum(v["attempts"] >= 2 for v in views.values())
    cut = final["animate_started"] - final["animate_handled"]
    print(
        f"\nfleet: SIGTERM {drained.host} with {drained_in_flight:.0f} Animate running: "
        f"exit {drained_code}, {final['animate_ok']:.0f} of its {final['animate_handled']:.0f} "
        f"calls OK, {cut:.0f} cut; SIGKILL {killed.host} with {killed_in_flight:.0f} running; "
        f"{len(feeder.jobs)} jobs: {dict(Counter(v['status'] for v in views.values()))}, "
        f"attempts {_attempts(views)}"
    )
    _all_succeeded(views)
    assert drained_code == 0
    assert final["animate_started"] == final["animate_handled"] == final["animate_ok"], final
    # The jobs that ran on the killed animator were retried elsewhere, and `attempts` says so.
    assert retried >= 1, _attempts(views)


def test_rolling_replacement_under_a_steady_stream_fails_no_job(fleet: Fleet, media):
    old = list(fleet.animators)
    started = time.monotonic()
    with Feeder(fleet, media) as feeder:
        for host in old:  # maxUnavailable 0: start the new one, wait until ready, drain the old
            fleet.add_animator()
            retired = fleet.drain_animator(host)
            assert retired.process.proc.wait(120) == 0
    rolled = time.monotonic() - started
    views = wait_all_final(fleet, feeder.jobs, JOB_TIMEOUT_S)
    statuses = Counter(v["status"] for v in views.values())
    print(
        f"\nfleet: rolled {len(old)} animators -> {sorted(fleet.animators)} in {rolled:.1f} s "
        f"with 2 jobs always queued: {len(feeder.jobs)} jobs, {dict(statuses)}, "
        f"attempts {_attempts(views)}"
    )
    assert statuses["failed"] == 0 and statuses["succeeded"] == len(feeder.jobs), statuses
    assert not set(old) & set(fleet.animators)


def _wait_running(gateway, job: str) -> dict:
    """Until the job is generating frames (claimed, past its preparation)."""
    return gateway.wait_until(
        job, lambda v: v["status"] == "running" and v["frames_done"] >= 1, JOB_TIMEOUT_S
    )


def test_a_gateway_drains_running_jobs_within_gateway_drain_s(fleet: Fleet, media):
    """SIGTERM on a gateway: with GATEWAY_DRAIN_S long enough its running job finishes there
    (attempts 1); with GATEWAY_DRAIN_S=0 the job goes back to the queue and another replica
    runs it (attempts 2). The fleet's gateways stop first, so each job has one claimant."""
    for gateway in fleet.gateways:
        assert gateway.stop(timeout=60) in (0, -15)
    fleet.gateways.clear()
    env = fleet.gateway_env()
    patient = GatewayRun(
        fleet.data_dir, {**env, "GATEWAY_WORKERS": "1", "GATEWAY_DRAIN_S": "120"}
    ).start()
    finished = patient.submit(*media, seconds="1")
    _wait_running(patient, finished)
    sent = time.monotonic()
    patient_code = patient.stop(timeout=150)
    patient_s = time.monotonic() - sent
    hasty = GatewayRun(
        fleet.data_dir, {**env, "GATEWAY_WORKERS": "1", "GATEWAY_DRAIN_S": "0"}
    ).start()
    finished_view = hasty.view(finished)
    requeued = hasty.submit(*media, seconds="1")
    _wait_running(hasty, requeued)
    sent = time.monotonic()
    hasty_code = hasty.stop(timeout=60)
    hasty_s = time.monotonic() - sent
    with psycopg.connect(fleet.database_url) as conn:
        after_stop = conn.execute(
            "SELECT status, error_code, attempts FROM jobs WHERE id = %s", (requeued,)
        ).fetchone()
    fleet.gateways.extend(GatewayRun(fleet.data_dir, env).start() for _ in range(2))
    requeued_view = fleet.gateways[0].wait_final(requeued, JOB_TIMEOUT_S)
    print(
        f"\nfleet: SIGTERM with GATEWAY_DRAIN_S=120: exit {patient_code} after {patient_s:.1f} "
        f"s, its running job {finished_view['status']} (attempts {finished_view['attempts']}); "
        f"with GATEWAY_DRAIN_S=0: exit {hasty_code} after {hasty_s:.1f} s, its running job "
        f"back in the queue {after_stop}, then {requeued_view['status']} on another replica "
        f"(attempts {requeued_view['attempts']}: an interruption uses none)"
    )
    assert patient_code in (0, -15) and hasty_code in (0, -15)
    assert finished_view["status"] == "succeeded" and finished_view["attempts"] == 1
    assert after_stop == ("queued", "interrupted", 0), after_stop
    assert requeued_view["status"] == "succeeded" and requeued_view["attempts"] == 1


def test_without_animators_gateways_stay_ready_and_jobs_fail_with_a_reason(fleet: Fleet, media):
    """Readiness covers the gateway's own dependencies only: with every animator gone, status
    reads and downloads keep working and a new job fails, after its attempts, with a reason."""
    done = fleet.gateways[0].submit(*media, seconds="1")
    assert fleet.gateways[0].wait_final(done, JOB_TIMEOUT_S)["status"] == "succeeded"
    for host in list(fleet.animators):
        assert fleet.drain_animator(host).process.proc.wait(120) == 0
    ready = [g.client.get("/readyz") for g in fleet.gateways]
    reads = [g.client.get(f"/v1/jobs/{done}").status_code for g in fleet.gateways]
    downloads = [g.client.get(f"/v1/jobs/{done}/result").status_code for g in fleet.gateways]
    started = time.monotonic()
    view = fleet.gateways[1].wait_final(
        fleet.gateways[1].submit(*media, seconds="1"), JOB_TIMEOUT_S
    )
    print(
        f"\nfleet: no animator: /readyz {[r.status_code for r in ready]} "
        f"{ready[0].json()['checks']}; job reads {reads}, downloads {downloads}; a new job "
        f"{view['status']} after {time.monotonic() - started:.1f} s and {view['attempts']} "
        f"attempts: {view['error']}"
    )
    assert [r.status_code for r in ready] == [200, 200]
    assert reads == [200, 200] and downloads == [200, 200]
    assert view["status"] == "failed" and view["attempts"] == 6, view
    assert view["error"]["code"] == "service_unavailable", view
    assert "animator" in view["error"]["message"], view
