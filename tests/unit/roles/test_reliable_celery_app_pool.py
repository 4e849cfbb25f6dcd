"""The jobs of Celery's prefork pool when the consumer closes (roles/celery_base/files/reliable_celery_app.py),
through Celery's own AsynPool.flush."""

from __future__ import annotations

import weakref
from collections import deque
from types import SimpleNamespace

import pytest
from billiard.pool import RUN
from celery.concurrency.asynpool import AsynPool
from celery.worker import state as worker_state


class Process:
    def __init__(self, alive: bool, inqueue_fd: int) -> None:
        self.alive, self.inqW_fd = alive, inqueue_fd

    def _is_alive(self) -> bool:
        return self.alive


class Job:
    """billiard's ApplyResult as flush reads it."""

    def __init__(self, job_id: int, accepted: bool = False, write_to: Process | None = None) -> None:
        self._job, self._accepted, self._write_to = job_id, accepted, write_to
        self._cache: dict[int, Job] = {}

    def discard(self) -> None:
        self._cache.pop(self._job, None)


def closing_pool(flush, *jobs: Job) -> SimpleNamespace:
    """The prefork pool as the consumer closes while it runs: nothing left half written."""
    pool = SimpleNamespace(
        _state=RUN,
        _cache={job._job: job for job in jobs},
        synack=False,
        outbound_buffer=deque(job for job in jobs if job._write_to is None),
        _active_writers=set(),
        _active_writes=set(),
        _busy_workers={11, 12, 14},
        maintain_pool=lambda: None,
    )
    for job in jobs:
        job._cache = pool._cache
    flush(pool)
    return pool


class Request:
    """Celery's task request as the wrapper reads it: a weak reference to its pool job once it has one."""

    def __init__(self, apply_result) -> None:
        self._apply_result = apply_result


JOBS = {
    "accepted": lambda: Job(1, accepted=True, write_to=Process(alive=True, inqueue_fd=11)),
    "written": lambda: Job(2, write_to=Process(alive=True, inqueue_fd=12)),
    "buffered": lambda: Job(3),
    "written to a dead process": lambda: Job(4, write_to=Process(alive=False, inqueue_fd=14)),
}


def test_a_closing_consumer_keeps_the_jobs_a_live_process_runs_and_forgets_the_rest(import_wrapper) -> None:
    import_wrapper()
    pool = closing_pool(AsynPool.flush, *(make() for make in JOBS.values()))
    assert sorted(pool._cache) == [1, 2]
    assert pool._busy_workers == {11, 12}, "no other job is written to the process of a job kept"


def test_control_celery_forgets_a_job_written_to_a_process_that_has_not_yet_accepted_it(import_wrapper) -> None:
    """Why the wrapper keeps them: the process runs the job, its result finds none and its message is never
    acked. If a future Celery keeps them itself, this test says so."""
    import_wrapper()
    pool = closing_pool(AsynPool.flush.__wrapped__, *(make() for make in JOBS.values()))
    assert sorted(pool._cache) == [1]
    assert pool._busy_workers == {11}


def test_the_wrapper_keeps_the_jobs_once_however_often_it_is_imported(import_wrapper) -> None:
    import_wrapper()
    flush = AsynPool.flush
    import_wrapper()
    assert AsynPool.flush is flush


@pytest.mark.parametrize(
    ("job", "active", "in_the_pool"),
    [
        ("accepted", True, True),
        ("written", False, True),
        ("buffered", False, False),
        ("written to a dead process", False, False),
        (None, False, False),
    ],
)
def test_a_request_is_in_the_pool_once_written_to_a_live_process(
    import_wrapper, monkeypatch, job: str | None, active: bool, in_the_pool: bool
) -> None:
    wrapper = import_wrapper()
    pool_job = JOBS[job]() if job else None
    request = Request(weakref.ref(pool_job) if pool_job else None)
    monkeypatch.setattr(worker_state, "active_requests", {request} if active else set())
    assert wrapper._in_the_pool(request) is in_the_pool
