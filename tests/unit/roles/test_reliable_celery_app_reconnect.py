"""How soon a worker tries its broker again (roles/celery_base/files/reliable_celery_app.py), through
Celery's own Consumer.ensure_connected and kombu's retry loop against a port that refuses."""

from __future__ import annotations

import functools
import socket
from types import SimpleNamespace

import pytest
from celery.worker.consumer.consumer import Consumer
from kombu import Connection
from kombu.exceptions import OperationalError


def refusing_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_worker_tries_its_broker_again_after_half_a_second_then_every_second(import_wrapper, monkeypatch) -> None:
    wrapper = import_wrapper()
    conf = SimpleNamespace(
        broker_connection_retry_on_startup=True, broker_connection_retry=True, broker_connection_max_retries=3
    )
    # Celery's consumer as its ensure_connected reads it after the first connection.
    consumer = SimpleNamespace(
        app=SimpleNamespace(conf=conf), first_connection_attempt=False, broker_connection_retry_attempt=0
    )
    consumer.ensure_connected = functools.partial(Consumer.ensure_connected, consumer)
    wrapper._ReconnectStep(consumer)

    sleeps = []
    monkeypatch.setattr("kombu.utils.functional.sleep", sleeps.append)
    connection = Connection(f"amqp://guest:guest@127.0.0.1:{refusing_port()}//", connect_timeout=1)
    with pytest.raises(OperationalError):
        consumer.ensure_connected(connection)
    # kombu sleeps whole seconds and then the rest; Celery's own back-off would be 2, 4 and 6 s.
    assert [seconds for seconds in sleeps if seconds] == [0.5, 1.0, 1.0]
