"""A worker on a RabbitMQ cluster (quorum queues, roles/celery_base/files/reliable_celery_app.py): nothing it
declares lives on one node only, and its start does not wait on a dead node."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from celery.signals import celeryd_after_setup
from celery.utils.nodenames import worker_direct


@pytest.fixture
def quorum_wrapper(import_wrapper, tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"task_default_queue_type": "quorum", "worker_direct": True}))
    return import_wrapper(RELIABLE_CELERY_SETTINGS=str(settings))


def test_the_nodes_own_queue_is_a_quorum_queue(quorum_wrapper) -> None:
    """Celery adds it as a classic durable queue; on a dead node it cannot be declared and the worker exits."""
    quorum_wrapper.app.amqp.queues.select_add(worker_direct("w1@host"))
    celeryd_after_setup.send(sender="w1@host", instance=SimpleNamespace(hostname="w1@host"), conf=None)
    assert quorum_wrapper.app.amqp.queues["w1@host.dq2"].queue_arguments == {"x-queue-type": "quorum"}


def test_delayed_delivery_declares_only_through_the_connected_node(quorum_wrapper) -> None:
    """Celery's step retries every URL of broker_url, a dead node's too (1 + 3 + 5 s) before the consumer runs."""
    url = "amqp://celery:secret@rabbit2:5672/celery"
    delayed_delivery = SimpleNamespace(_validate_broker_urls=None)
    consumer = SimpleNamespace(
        blueprint=SimpleNamespace(steps={quorum_wrapper.DELAYED_DELIVERY_STEP: delayed_delivery}),
        connection=SimpleNamespace(as_uri=lambda include_password: url if include_password else "masked"),
    )
    quorum_wrapper._DeclareThroughTheConnectedNodeStep(consumer)
    assert delayed_delivery._validate_broker_urls("amqp://rabbit1;amqp://rabbit2;amqp://rabbit3") == {url}
    assert quorum_wrapper._DeclareThroughTheConnectedNodeStep in quorum_wrapper.app.steps["consumer"]


def test_classic_queues_change_nothing(import_wrapper) -> None:
    wrapper = import_wrapper()
    assert wrapper._DeclareThroughTheConnectedNodeStep not in wrapper.app.steps["consumer"]
