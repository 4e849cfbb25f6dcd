"""The rabbitmq_cluster filter (plugins/filter/rabbitmq_cluster.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.celery_url import celery_url
from ansible_collections.reliable.celery.plugins.filter.rabbitmq_cluster import (
    broker_hosts_as_cluster_nodes,
    rabbitmq_cluster,
    rabbitmq_cluster_client_settings,
)

COOKIE = "A" * 32
NODES = ["broker1", "broker2", "broker3"]


def test_three_nodes_form_a_cluster_named_as_rabbitmq_names_them() -> None:
    assert rabbitmq_cluster(NODES, COOKIE, "broker2") == {
        "clustered": True,
        "nodes": ["rabbit@broker1", "rabbit@broker2", "rabbit@broker3"],
    }


@pytest.mark.parametrize("nodes", [[], ["broker1"]])
def test_no_nodes_or_one_is_a_single_node_without_a_cookie(nodes: list[str]) -> None:
    assert rabbitmq_cluster(nodes, "", "broker1")["clustered"] is False


@pytest.mark.parametrize(
    ("nodes", "cookie", "this_host", "message"),
    [
        ("broker1,broker2", COOKIE, "broker1", "must be a list of host names"),
        (
            ["broker1.example.com", "broker2", "broker3"],
            COOKIE,
            "broker2",
            "no dots); refused: ['broker1.example.com']",
        ),
        (["broker1", "broker1", "broker2"], COOKIE, "broker1", "must not repeat a host"),
        (NODES, COOKIE, "other", "without this host's short host name 'other'"),
        (["broker1", "broker2"], COOKIE, "broker1", "needs an odd number (3, 5, 7)"),
        (NODES, "", "broker1", "celery_broker_rabbitmq_erlang_cookie must be 20-255 letters and digits"),
        (NODES, "short", "broker1", "celery_broker_rabbitmq_erlang_cookie must be 20-255 letters and digits"),
        (NODES, "A" * 31 + "!", "broker1", "celery_broker_rabbitmq_erlang_cookie must be 20-255 letters and digits"),
    ],
)
def test_what_cannot_form_a_cluster_is_refused_naming_the_variable(nodes, cookie, this_host, message) -> None:
    with pytest.raises(AnsibleFilterError, match="celery_broker_rabbitmq") as error:
        rabbitmq_cluster(nodes, cookie, this_host)
    assert message in str(error.value)
    assert cookie not in str(error.value) or not cookie


def test_the_clients_of_a_cluster_use_quorum_queues_and_publisher_confirms() -> None:
    nodes = ";".join(f"amqp://celery:secret@rabbit{n}:5672/celery" for n in (1, 2, 3))
    settings = rabbitmq_cluster_client_settings(celery_url(nodes, "celery_worker_broker_url"))
    assert settings == {
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        "broker_transport_options": {"confirm_publish": True},
    }
    settings["broker_transport_options"]["confirm_publish"] = False  # each caller gets its own copy
    assert rabbitmq_cluster_client_settings(celery_url(nodes, "v"))["broker_transport_options"]["confirm_publish"]
    for single in ("amqp://celery:secret@rabbit1:5672/celery", "redis://broker:6379/0;redis://broker2:6379/0"):
        assert rabbitmq_cluster_client_settings(celery_url(single, "v")) == {}


def test_several_rabbitmq_broker_hosts_are_the_nodes_of_one_cluster_by_short_name() -> None:
    hosts = {"mq1.example.org": "rabbitmq", "mq2.example.org": "rabbitmq", "mq3": "rabbitmq"}
    assert broker_hosts_as_cluster_nodes(hosts, "broker") == ["mq1", "mq2", "mq3"]
    for single in ("redis", "valkey", "rabbitmq"):
        assert broker_hosts_as_cluster_nodes({"broker1": single}, "broker") == []


@pytest.mark.parametrize(
    "broker_types",
    [
        {"b1": "redis", "b2": "redis", "b3": "valkey"},
        {"b1": "rabbitmq", "b2": "rabbitmq", "b3": "valkey"},
    ],
)
def test_several_brokers_of_mixed_types_are_refused_naming_the_group(broker_types: dict) -> None:
    with pytest.raises(AnsibleFilterError, match="message_bus has 3 hosts with celery_broker_type") as error:
        broker_hosts_as_cluster_nodes(broker_types, "message_bus")
    assert "celery_site_broker_group" in str(error.value)


@pytest.mark.parametrize("broker_type", ["redis", "valkey"])
def test_several_redis_or_valkey_hosts_are_no_rabbitmq_cluster(broker_type: str) -> None:
    assert broker_hosts_as_cluster_nodes({"b1": broker_type, "b2": broker_type, "b3": broker_type}, "broker") == []
