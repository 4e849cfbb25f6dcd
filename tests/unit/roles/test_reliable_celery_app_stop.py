"""How long the wrapper (roles/celery_base/files/reliable_celery_app.py) asks systemd to wait when a worker
stops: until its running tasks are past their hard time limits, + the stop timeout. molecule's default
scenario stops real workers under systemd."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

MAX_TASK_SECONDS = 240
STOP_TIMEOUT_SECONDS = 30


class Request:
    """What the wrapper reads of Celery's request: when it started and its time limits."""

    def __init__(self, started=None, limit=None, task_limit=None) -> None:
        self.time_start = started
        self.time_limits = (limit, None)
        self.task = SimpleNamespace(time_limit=task_limit)


@pytest.fixture
def wrapper(import_wrapper, tmp_path, monkeypatch):
    settings = tmp_path / "settings.json"
    stop = {"max_task_seconds": MAX_TASK_SECONDS, "stop_timeout_seconds": STOP_TIMEOUT_SECONDS}
    settings.write_text(json.dumps({"reliable_celery_stop": stop}))
    module = import_wrapper(RELIABLE_CELERY_SETTINGS=str(settings), RUNTIME_DIRECTORY=str(tmp_path))
    monkeypatch.setattr(module, "STOP_EXTEND_SECONDS", 3600)  # one round per test
    yield module
    module.worker_state.reserved_requests.clear()


def test_a_tasks_limit_is_its_messages_else_its_tasks_else_the_apps_else_the_longest_tasks(wrapper) -> None:
    def left(request, app_limit=None):
        return wrapper.seconds_to_limits([request], 1000.0, app_limit, MAX_TASK_SECONDS)

    assert left(Request(started=990.0, limit=90, task_limit=60), app_limit=30) == 80
    assert left(Request(started=990.0, task_limit=60), app_limit=30) == 50
    assert left(Request(started=990.0), app_limit=30) == 20
    assert left(Request(started=990.0)) == MAX_TASK_SECONDS - 10
    assert left(Request(limit=90)) == 90, "a task not started yet counts from now"
    assert left(Request(started=900.0, limit=90)) == -10, "past its limit"


def test_the_last_limit_counts_and_none_without_tasks(wrapper) -> None:
    requests = [Request(started=990.0, limit=20), Request(started=995.0, limit=60)]
    assert wrapper.seconds_to_limits(requests, 1000.0, None, MAX_TASK_SECONDS) == 55
    assert wrapper.seconds_to_limits([], 1000.0, None, MAX_TASK_SECONDS) is None


def received_within(notify, seconds=5.0) -> list[bytes]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        messages = notify()
        if messages:
            return messages
        time.sleep(0.01)
    return []


def test_a_stop_extends_systemds_timeout_to_the_last_limit_and_records_the_deadline(wrapper, notify, tmp_path):
    held = [Request(started=time.time() - 10, limit=90), Request(started=time.time() - 5, limit=20)]
    wrapper.worker_state.reserved_requests.update(held)
    before = time.monotonic()
    wrapper._extend_stop_while_tasks_run()
    [message] = received_within(notify)
    key, _equals, usec = message.decode().partition("=")
    assert key == "EXTEND_TIMEOUT_USEC"
    assert int(usec) / 1e6 == pytest.approx(80 + STOP_TIMEOUT_SECONDS, abs=1)
    record = json.loads((tmp_path / "stop-deadline").read_text())
    assert record["stop_by_monotonic"] == pytest.approx(before + 80 + STOP_TIMEOUT_SECONDS, abs=1)


def test_a_stop_with_every_task_past_its_limit_or_none_extends_nothing(wrapper, notify, tmp_path) -> None:
    wrapper._extend_stop_while_tasks_run()
    held = Request(started=time.time() - 100, limit=90)  # a reference kept: Celery's set holds requests weakly
    wrapper.worker_state.reserved_requests.add(held)
    wrapper._extend_stop_while_tasks_run()
    assert received_within(notify, seconds=1) == []
    assert not (tmp_path / "stop-deadline").exists()
