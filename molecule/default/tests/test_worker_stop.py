"""Stops that follow the running tasks: the units' TimeoutStopSec is short (celery_worker_stop_timeout_seconds,
30 s), and a stopping worker extends it (EXTEND_TIMEOUT_USEC) while a running task is within its hard time
limit, its own or else the longest task's (celery_worker_max_task_seconds)."""

from __future__ import annotations

import json

import pytest
from conftest import current_unit, journal, readiness, record_figures, send_tasks, unit_properties, wait_for

INSTANCE = "reports"  # concurrency 1: the task sent runs at once
STOP_TIMEOUT_SECONDS = 30  # celery_worker_stop_timeout_seconds' default
# The settings with a shorter longest task, through a runtime drop-in: a task without a limit of its own that runs
# longer than the longest task is one that ignores the stack's limits.
SHORT_MAX_TASK_SECONDS = 15
TEST_SETTINGS_DIR = "/run/reliable-celery-test-stop"


@pytest.fixture
def worker(host):
    """The instance's current slot, ready; started again (and ready) after the test whatever it did."""
    unit = current_unit(host, INSTANCE)
    wait_for(lambda: readiness(host, INSTANCE).get("pid"), 60, f"{unit} ready")
    yield unit
    host.run(f"systemctl start {unit}")
    wait_for(lambda: readiness(host, INSTANCE).get("pid"), 120, f"{unit} ready again")


def received_at(host, unit: str, task_id: str, since: str) -> float:
    """When the worker logged that it received TASK_ID (an idle worker of concurrency 1 starts it at once)."""

    def logged() -> float | None:
        entries = map(json.loads, host.check_output(f"journalctl -u {unit} -o json --since @{since}").splitlines())
        return next((int(e["__REALTIME_TIMESTAMP"]) / 1e6 for e in entries if task_id in str(e.get("MESSAGE"))), None)

    return wait_for(logged, 60, f"{unit} to receive {task_id}")


def timed_stop(host, unit: str) -> tuple[float, float]:
    """`systemctl stop UNIT` (it returns when the unit has stopped): when it began and how long it took."""
    began, ended = map(float, host.check_output(f"date +%s.%N; systemctl stop {unit}; date +%s.%N").split())
    return began, ended - began


def test_an_idle_worker_stops_within_three_seconds(host, worker) -> None:
    _began, seconds = timed_stop(host, worker)
    record_figures("REPORT", f"stop: an idle worker stopped in {seconds:.1f} s")
    assert seconds <= 3, journal(host, worker)
    assert unit_properties(host, worker, "Result")["Result"] == "success"


def test_a_task_within_its_own_time_limit_finishes_during_a_stop_longer_than_the_stop_timeout(host, worker) -> None:
    since = host.check_output("date +%s")
    (task_id,) = send_tasks(host, [("example.sleep", [60], "slow", {"time_limit": 90})])
    received = received_at(host, worker, task_id, since)
    began, seconds = timed_stop(host, worker)
    log = journal(host, worker, lines=30)
    record_figures("REPORT", f"stop: a 60 s task with a 90 s limit finished during a stop of {seconds:.1f} s")
    assert unit_properties(host, worker, "Result")["Result"] == "success", log
    assert "SIGKILL" not in log, log
    assert "WorkerLostError" not in log, log
    assert f"Task example.sleep[{task_id}] succeeded" in log, log
    assert seconds > STOP_TIMEOUT_SECONDS + 10, "the stop did not wait for the task"
    assert began + seconds >= received + 59, log


@pytest.fixture
def short_max_task(host, worker):
    """The worker runs with celery_worker_max_task_seconds = SHORT_MAX_TASK_SECONDS (a runtime drop-in
    whose environment file names a copy of the settings), its other settings unchanged."""
    settings = json.loads(host.file("/etc/celery/worker-settings.json").content_string)
    settings["reliable_celery_stop"]["max_task_seconds"] = SHORT_MAX_TASK_SECONDS
    drop_ins = f"/run/systemd/system/{worker}.d"
    host.check_output(
        f"install -d -m 0755 {TEST_SETTINGS_DIR} {drop_ins}"
        f" && echo {json.dumps(json.dumps(settings))} > {TEST_SETTINGS_DIR}/settings.json"
        f" && echo RELIABLE_CELERY_SETTINGS={TEST_SETTINGS_DIR}/settings.json > {TEST_SETTINGS_DIR}/settings.env"
        f" && chmod 0644 {TEST_SETTINGS_DIR}/*"
        f" && printf '[Service]\\nEnvironmentFile={TEST_SETTINGS_DIR}/settings.env\\n' > {drop_ins}/test-stop.conf"
        f" && systemctl daemon-reload && systemctl restart {worker}"
    )
    wait_for(lambda: readiness(host, INSTANCE).get("pid"), 120, f"{worker} ready with the shorter longest task")
    yield worker
    host.check_output(f"systemctl stop {worker}; rm -r {drop_ins} {TEST_SETTINGS_DIR} && systemctl daemon-reload")


def test_a_task_past_its_limit_is_killed_the_stop_timeout_after_it(host, short_max_task) -> None:
    unit = short_max_task
    since = host.check_output("date +%s")
    # Expired by the time the killed task comes back, so that it does not run again for minutes.
    options = {"expires": SHORT_MAX_TASK_SECONDS}
    (task_id,) = send_tasks(host, [("example.sleep", [300], "slow", options)])
    received = received_at(host, unit, task_id, since)
    began, seconds = timed_stop(host, unit)
    ended = began + seconds
    past_limit = ended - (received + SHORT_MAX_TASK_SECONDS)
    record_figures(
        "REPORT",
        f"stop: a task past its limit ({SHORT_MAX_TASK_SECONDS} s) was killed {past_limit:.1f} s after it,"
        f" {seconds:.1f} s into the stop",
    )
    assert unit_properties(host, unit, "Result")["Result"] == "timeout", journal(host, unit)
    assert seconds > STOP_TIMEOUT_SECONDS + 5, "the stop was not extended while the task was within its limit"
    assert STOP_TIMEOUT_SECONDS - 3 <= past_limit <= STOP_TIMEOUT_SECONDS + 5, journal(host, unit)
