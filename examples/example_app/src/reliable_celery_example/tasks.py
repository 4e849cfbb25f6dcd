"""Tasks for the tests and the demo. Every task records where it ran."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import socket
import time

from celery import shared_task
from celery.signals import task_postrun, task_prerun
from celery.worker.control import control_command

# With EXAMPLE_TASK_EVENTS=1, every task start and end is appended to task-events.jsonl in the
# worker's StateDirectory: a record of what ran, independent of the result backend, that tells
# a task that was lost (no end) or ran twice (two starts) apart.
EVENTS_FILE = "task-events.jsonl"


def _record_event(event: str, task_id: str, task_name: str, **details: object) -> None:
    line = json.dumps({"event": event, "id": task_id, "name": task_name, "t": time.time(), **details, **_where()})
    # One short O_APPEND write per event: concurrent pool processes do not interleave lines.
    with open(os.path.join(os.environ["STATE_DIRECTORY"], EVENTS_FILE), "a") as events:
        events.write(line + "\n")


if os.environ.get("EXAMPLE_TASK_EVENTS") == "1" and os.environ.get("STATE_DIRECTORY"):

    @task_prerun.connect(weak=False)
    def _record_start(task_id=None, task=None, **_kwargs) -> None:
        _record_event("start", task_id, task.name, node=task.request.hostname)

    @task_postrun.connect(weak=False)
    def _record_end(task_id=None, task=None, state=None, **_kwargs) -> None:
        _record_event("end", task_id, task.name, state=state)


def _where() -> dict[str, object]:
    return {"hostname": socket.gethostname(), "pid": os.getpid()}


@shared_task(name="example.add")
def add(x: int, y: int) -> dict[str, object]:
    """A quick task."""
    return {"result": x + y, **_where()}


@shared_task(bind=True, name="example.sleep")
def sleep(self, seconds: float) -> dict[str, object]:
    """A long task: runs for ``seconds`` and reports its worker node."""
    started = time.time()
    time.sleep(seconds)
    return {"slept": time.time() - started, "node": self.request.hostname, **_where()}


@shared_task(name="example.burn")
def burn(seconds: float) -> dict[str, object]:
    """A CPU-bound task: hashes for ``seconds`` without a pause (the watchdog benchmark's soak)."""
    started, rounds = time.time(), 0
    while time.time() - started < seconds:
        hashlib.sha256(rounds.to_bytes(8, "little") * 512).digest()
        rounds += 1
    return {"rounds": rounds, **_where()}


# What example.leak keeps: memory a pool process holds until it ends, as a leaking library would.
_leaked: list[bytearray] = []


@shared_task(name="example.leak")
def leak(megabytes: int) -> dict[str, object]:
    """A leaking task: keeps ``megabytes`` of resident memory in its pool process after it returns."""
    _leaked.append(bytearray(b"\x01") * (megabytes * 1024 * 1024))
    return {"leaked_megabytes": sum(map(len, _leaked)) // 1024 // 1024, **_where()}


@shared_task(name="example.fail")
def fail(message: str = "example failure") -> None:
    """A task that always fails."""
    raise RuntimeError(message)


@shared_task(name="example.crash")
def crash(what: str) -> None:
    """A poison task: SIGKILLs its pool process (``pool``) or its whole worker (``worker``, whose
    death systemd answers by killing the pool processes: this one waits for it)."""
    os.kill(os.getppid() if what == "worker" else os.getpid(), signal.SIGKILL)
    time.sleep(60)


@shared_task(bind=True, name="example.whoami")
def whoami(self) -> dict[str, object]:
    """Which worker node and queue ran this task."""
    return {"node": self.request.hostname, "queue": self.request.delivery_info.get("routing_key"), **_where()}


@shared_task(name="example.code_release")
def code_release() -> dict[str, object]:
    """The version and file of a module imported lazily, at the first call of this task."""
    release = importlib.import_module("reliable_celery_example.release")
    return {"version": release.VERSION, "file": release.__file__, **_where()}


@shared_task(name="example.environment_digest")
def environment_digest(name: str) -> str | None:
    """SHA-256 of an environment variable's value as the worker sees it (never the value)."""
    value = os.environ.get(name)
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


@shared_task(name="example.credential_digest")
def credential_digest(name: str) -> str | None:
    """SHA-256 of a systemd credential as the worker reads it ($CREDENTIALS_DIRECTORY/NAME), never the value."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory is None or not os.path.isfile(os.path.join(directory, name)):
        return None
    with open(os.path.join(directory, name), "rb") as credential:
        return hashlib.sha256(credential.read()).hexdigest()


@shared_task(bind=True, name="example.effective_settings")
def effective_settings(self) -> dict[str, object]:
    """The delivery settings as the worker resolved them for this very task."""
    conf = self.app.conf
    return {
        "acks_late": self.acks_late,
        "reject_on_worker_lost": self.reject_on_worker_lost,
        "task_acks_late": conf.task_acks_late,
        "task_reject_on_worker_lost": conf.task_reject_on_worker_lost,
        "worker_prefetch_multiplier": conf.worker_prefetch_multiplier,
        "task_track_started": conf.task_track_started,
        "node": self.request.hostname,
    }


@shared_task(bind=True, name="example.tick")
def tick(self) -> dict[str, object]:
    """The periodic task of the demo and the tests: celery_beat's schedule sends it."""
    return {"node": self.request.hostname, "ran_at": time.time(), **_where()}


@control_command(args=[("seconds", float)], signature="<seconds>")
def example_block_main_thread(_state, seconds: float = 60.0) -> dict[str, str]:
    """A remote-control command (``celery control example_block_main_thread 60``) that blocks the
    worker's main thread, its event loop: the hang systemd's watchdog is there for."""
    time.sleep(seconds)
    return {"ok": f"blocked the main thread for {seconds} s"}
