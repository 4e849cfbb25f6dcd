from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.redis_sentinel import (
    broker_hosts_as_sentinel_nodes,
    redis_sentinel,
    sentinel_group_whole,
)

NODES = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
SHARED = "Sentinel-Secret-0123456789"


def test_three_hosts_form_a_group_whose_first_is_the_first_primary() -> None:
    assert redis_sentinel(NODES, ["127.0.0.1", "10.0.0.2"], SHARED, "celery") == {
        "enabled": True,
        "nodes": NODES,
        "address": "10.0.0.2",
        "first_primary": "10.0.0.1",
        "quorum": 2,
    }


@pytest.mark.parametrize("nodes", [[], ["10.0.0.1"]])
def test_no_nodes_or_one_is_a_single_redis_without_a_password(nodes: list[str]) -> None:
    assert redis_sentinel(nodes, ["127.0.0.1"], "", "celery") == {"enabled": False}


@pytest.mark.parametrize(
    ("nodes", "bind", "password", "master", "message"),
    [
        ("10.0.0.1", ["10.0.0.1"], SHARED, "celery", "must be a list of the broker hosts' addresses"),
        (NODES[:2], ["10.0.0.1"], SHARED, "celery", "odd number"),
        (NODES[:2] + NODES[:1], ["10.0.0.1"], SHARED, "celery", "must not repeat"),
        (NODES, ["127.0.0.1", "::"], SHARED, "celery", "celery_broker_bind_addresses"),
        (NODES, ["10.0.0.1"], "short", "celery", "celery_broker_redis_sentinel_password must be at least 16"),
        (NODES, ["10.0.0.1"], SHARED, "my master", "celery_broker_redis_sentinel_master must be"),
    ],
)
def test_a_group_sentinel_cannot_serve_is_refused_naming_the_variable(nodes, bind, password, master, message) -> None:
    with pytest.raises(AnsibleFilterError, match=message) as error:
        redis_sentinel(nodes, bind, password, master)
    assert SHARED not in str(error.value)


def test_several_redis_hosts_are_a_sentinel_group_of_their_addresses() -> None:
    addresses = {"b1": "10.0.0.1", "b2": "10.0.0.2", "b3": "10.0.0.3"}
    assert broker_hosts_as_sentinel_nodes({"b1": "valkey", "b2": "valkey", "b3": "valkey"}, addresses) == NODES
    assert broker_hosts_as_sentinel_nodes({"b1": "redis"}, addresses) == []
    assert broker_hosts_as_sentinel_nodes({"b1": "rabbitmq", "b2": "rabbitmq", "b3": "rabbitmq"}, addresses) == []


# What redis-cli prints for AUTH, SENTINEL CKQUORUM and SENTINEL MASTER on a whole group of three (abridged).
WHOLE = [
    "OK",
    "OK 3 usable Sentinels. Quorum and failover authorization can be reached",
    *["name", "celery", "ip", "10.0.0.2", "port", "6379", "flags", "master"],
    *["num-slaves", "2", "num-other-sentinels", "2", "quorum", "2"],
]


def test_a_group_is_whole_with_a_quorum_a_primary_and_every_other_host_replicating_and_watching() -> None:
    assert sentinel_group_whole(WHOLE, 3)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (1, "(error) NOQUORUM 1 usable Sentinels. Not enough available Sentinels to reach the majority"),
        (9, "s_down,master"),
        (11, "1"),
        (13, "1"),
    ],
)
def test_a_group_short_of_a_quorum_a_healthy_primary_a_replica_or_a_sentinel_is_not_whole(index, value) -> None:
    answer = list(WHOLE)
    answer[index] = value
    assert not sentinel_group_whole(answer, 3)


@pytest.mark.parametrize("answer", [[], ["(error) WRONGPASS invalid username-password pair"], WHOLE[:2]])
def test_no_answer_or_a_refused_one_is_not_whole(answer) -> None:
    assert not sentinel_group_whole(answer, 3)
