"""The wrapper's start canary (roles/celery_base/files/reliable_celery_app.py), against a stand-in for Celery's
consumer; molecule's default scenario runs it under systemd with a real broker and pool."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

NODE = "default@host"
DIRECT = NODE + ".dq2"


class TaskConsumer:
    """kombu's consumer of the task queues, as the step holds queues back and Celery adds them."""

    def __init__(self, queues: list[str]) -> None:
        self.queues = [SimpleNamespace(name=name) for name in queues]
        self.channel = SimpleNamespace(brpop_timeout=1)  # Redis's channel has it; AMQP's not

    def cancel_by_queue(self, name: str) -> None:
        self.queues = [queue for queue in self.queues if queue.name != name]


class Consumer:
    def __init__(self, queues: list[str]) -> None:
        self.hostname = NODE
        self.task_consumer = TaskConsumer(queues)
        self.timer = SimpleNamespace(call_repeatedly=self.call_repeatedly, call_after=self.call_after)
        self.tick = None
        self.later: list[tuple[float, object]] = []

    def call_repeatedly(self, _seconds, function):
        self.tick = function
        return SimpleNamespace(cancel=lambda: setattr(self, "tick", None))

    def call_after(self, seconds, function):
        self.later.append((seconds, function))

    def add_task_queue(self, name: str) -> None:
        self.task_consumer.queues.append(SimpleNamespace(name=name))

    def consuming(self) -> list[str]:
        return [queue.name for queue in self.task_consumer.queues]


def exit_now(code: int) -> None:
    """os._exit as a test sees it: the exception SystemExit."""
    raise SystemExit(code)


@pytest.fixture
def wrapper(import_wrapper, notify, tmp_path, monkeypatch):
    """The wrapper with a start canary of 5 s; what it sends goes to the returned module's `sent`."""

    def load(task="reliable_celery.start_canary", seconds=5):
        settings = tmp_path / "settings.json"
        settings.write_text(json.dumps({"reliable_celery_start_canary": {"task": task, "seconds": seconds}}))
        module = import_wrapper(RELIABLE_CELERY_SETTINGS=str(settings), RUNTIME_DIRECTORY=str(tmp_path))
        module.sent = []
        monkeypatch.setattr(module.app, "send_task", lambda name, **options: module.sent.append((name, options)))
        monkeypatch.setattr(module.os, "_exit", exit_now)
        notify()
        return module

    return load


def start(module) -> Consumer:
    consumer = Consumer(["celery", "reports", DIRECT])
    consumer.step = module._StartCanaryStep(consumer)
    consumer.step.start(consumer)
    deadline = time.monotonic() + 5
    while not module.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    return consumer


def canary_id(module) -> str:
    return module.sent[0][1]["task_id"]


def test_a_starting_worker_consumes_its_own_queue_alone_and_sends_the_canary_there(wrapper, notify, tmp_path) -> None:
    module = wrapper()
    consumer = start(module)
    assert consumer.consuming() == [DIRECT]
    [(name, options)] = module.sent
    assert name == "reliable_celery.start_canary"
    assert options["task_id"].startswith("start-canary-")
    assert options["queue"].name == DIRECT
    consumer.tick()
    assert (consumer.consuming(), notify(), (tmp_path / "ready").exists()) == ([DIRECT], [], False)


def test_once_its_task_ran_the_worker_consumes_every_queue_and_is_ready_one_redis_poll_later(
    wrapper, notify, tmp_path
) -> None:
    module = wrapper()
    consumer = start(module)
    module._record_start_canary(sender=SimpleNamespace(request=SimpleNamespace(id=canary_id(module))), result=None)
    consumer.tick()
    assert consumer.consuming() == [DIRECT, "celery", "reports"]
    assert consumer.tick is None, "it checks no more"
    [(seconds, announce)] = consumer.later
    assert seconds == 1  # kombu's BRPOP under way asks for the held queues only from its next round on
    assert notify() == []
    announce()
    record = json.loads((tmp_path / "ready").read_text())
    assert (record["node"], isinstance(record["start_canary_seconds"], float)) == (NODE, True)
    assert notify() == [f"READY=1\nMAINPID={module.os.getpid()}".encode()]
    consumer.step.start(consumer)  # a reconnect: nothing held back, nothing sent again
    assert (consumer.consuming(), len(module.sent)) == ([DIRECT, "celery", "reports"], 1)


def test_with_leases_the_worker_is_ready_at_its_next_fetch(wrapper, notify) -> None:
    module = wrapper()
    consumer = start(module)
    module._leases.fetching = consumer.task_consumer.channel
    module._record_start_canary(sender=SimpleNamespace(request=SimpleNamespace(id=canary_id(module))), result=None)
    consumer.tick()
    [(seconds, _announce)] = consumer.later
    assert seconds == module.reliable_celery_leases.FETCH_IDLE_SECONDS


def test_the_ready_signal_alone_does_not_make_the_worker_ready(wrapper, notify, tmp_path) -> None:
    module = wrapper()
    module._worker_ready(sender=SimpleNamespace(hostname=NODE))
    assert (notify(), (tmp_path / "ready").exists()) == ([], False)


def test_a_failed_canary_ends_the_worker_before_it_consumed_its_queues(wrapper, caplog) -> None:
    module = wrapper()
    consumer = start(module)
    module._record_start_canary(task_id=canary_id(module), exception=RuntimeError("database unreachable"))
    with pytest.raises(SystemExit) as exited:
        consumer.tick()
    assert exited.value.code == 1
    assert consumer.consuming() == [DIRECT]
    assert (
        "start canary: reliable_celery.start_canary failed (RuntimeError: database unreachable)."
        " This worker consumes none of its queues and stops." in caplog.text
    )


def test_another_process_s_canary_decides_nothing(wrapper) -> None:
    module = wrapper()
    consumer = start(module)
    module._record_start_canary(task_id="start-canary-of-an-earlier-process", exception=RuntimeError("old"))
    module._record_start_canary(task_id="some-task", exception=RuntimeError("not a canary"))
    consumer.tick()
    assert consumer.consuming() == [DIRECT]


def test_a_canary_that_does_not_finish_in_time_ends_the_worker(wrapper, caplog) -> None:
    module = wrapper(seconds=0.2)
    consumer = start(module)
    consumer.tick()
    time.sleep(0.25)
    with pytest.raises(SystemExit):
        consumer.tick()
    assert "start canary: reliable_celery.start_canary did not finish within 0.2 s" in caplog.text


def test_a_canary_task_the_app_lacks_ends_the_worker_at_once(wrapper, caplog) -> None:
    module = wrapper(task="example.missing")
    with pytest.raises(SystemExit):
        start(module)
    assert "start canary: example.missing is not a task of this app" in caplog.text


def test_a_reconnect_during_the_canary_holds_the_queues_back_again(wrapper) -> None:
    module = wrapper()
    consumer = start(module)
    consumer.step.stop(consumer)
    consumer.task_consumer = TaskConsumer(["celery", "reports", DIRECT])  # Celery's new consumer: every queue
    consumer.step.start(consumer)
    assert (consumer.consuming(), len(module.sent)) == ([DIRECT], 1)
    module._record_start_canary(task_id=canary_id(module))
    consumer.tick()
    assert consumer.consuming() == [DIRECT, "celery", "reports"]
