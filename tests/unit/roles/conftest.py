"""The wrapper (roles/celery_base/files/reliable_celery_app.py) as a worker imports it, and a datagram socket
standing in for systemd's notify socket."""

from __future__ import annotations

import importlib
import socket
import sys
from pathlib import Path

import pytest

FILES = Path(__file__).parents[3] / "roles" / "celery_base" / "files"
WRAPPER_ENVIRONMENT = ("RELIABLE_CELERY_APP", "RELIABLE_CELERY_SETTINGS", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY")


@pytest.fixture
def notify(tmp_path, monkeypatch):
    """systemd's notify socket: the wrapper's messages since the last call of the returned function."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "notify"))
    server.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))

    def received() -> list[bytes]:
        messages = []
        while True:
            try:
                messages.append(server.recv(4096))
            except BlockingIOError:
                return messages

    yield received
    server.close()


@pytest.fixture
def import_wrapper(monkeypatch):
    """Import the wrapper afresh with the environment given as keyword arguments (the others unset)."""

    def load(**environment):
        for name in (*WRAPPER_ENVIRONMENT, "WATCHDOG_USEC", "WATCHDOG_PID"):
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.syspath_prepend(str(FILES))
        sys.modules.pop("reliable_celery_app", None)
        return importlib.import_module("reliable_celery_app")

    yield load
    sys.modules.pop("reliable_celery_app", None)


class Clock:
    """A clock the test moves (``clock.now += seconds``), for code that takes a ``clock`` callable."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
