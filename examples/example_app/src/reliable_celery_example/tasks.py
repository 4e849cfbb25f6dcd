"""Tasks for the tests and the demo. Every task records where it ran."""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
import time

from celery import shared_task


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


@shared_task(name="example.fail")
def fail(message: str = "example failure") -> None:
    """A task that always fails."""
    raise RuntimeError(message)


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
