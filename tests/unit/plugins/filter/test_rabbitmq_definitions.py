from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.rabbitmq_definitions import (
    rabbitmq_definitions,
    rabbitmq_definitions_drift,
)

WANTED_4 = rabbitmq_definitions("celery", "c2FsdGhhc2g=", "celery", "4.0")


def live_export(wanted: dict) -> dict:
    """What `rabbitmqctl export_definitions` shows after importing WANTED, with what else a node has."""
    live = copy.deepcopy(wanted)
    for user in live["users"]:
        user["limits"] = {}
    live["users"].append({"name": "ops", "password_hash": "x", "hashing_algorithm": "y", "tags": ["administrator"]})
    live["vhosts"] = [{"name": "/", "description": "", "metadata": {}}, *({**v, "limits": []} for v in live["vhosts"])]
    live["policies"] = [*live["policies"], {"vhost": "/", "name": "ops-ha", "pattern": ".*", "definition": {}}]
    live.update(rabbit_version="4.0.5", queues=[], exchanges=[], bindings=[])
    return live


def test_the_user_has_no_tags_and_every_permission_on_its_vhost_only() -> None:
    [user] = WANTED_4["users"]
    assert user == {
        "name": "celery",
        "password_hash": "c2FsdGhhc2g=",
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": [],
    }
    assert WANTED_4["vhosts"] == [{"name": "celery"}]
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    assert WANTED_4["permissions"] == [{"user": "celery", "vhost": "celery", **everything}]


def test_rabbitmq_4_gets_no_delivery_limit_on_quorum_queues_and_3_no_policy() -> None:
    assert WANTED_4["policies"] == [
        {
            "vhost": "celery",
            "name": "celery-delivery-limit",
            "pattern": ".*",
            "apply-to": "quorum_queues",
            "definition": {"delivery-limit": -1},
            "priority": 0,
        }
    ]
    assert rabbitmq_definitions("celery", "h", "celery", "4.1")["policies"] == WANTED_4["policies"]
    # 3.10 refuses both -1 and apply-to quorum_queues, and has no default limit.
    assert rabbitmq_definitions("celery", "h", "celery", "3.10")["policies"] == []


@pytest.mark.parametrize(("field", "value"), [("user", ""), ("password_hash", None), ("vhost", 3)])
def test_missing_names_are_refused(field: str, value: object) -> None:
    arguments = {"user": "celery", "password_hash": "h", "vhost": "celery", "broker_version": "4.0", field: value}
    with pytest.raises(AnsibleFilterError, match=f"{field} must be a non-empty string"):
        rabbitmq_definitions(**arguments)


def test_a_version_that_is_no_version_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match=r"broker_version must be MAJOR\.MINOR"):
        rabbitmq_definitions("celery", "h", "celery", "four")


def test_a_node_with_the_definitions_and_more_is_in_sync() -> None:
    assert rabbitmq_definitions_drift(live_export(WANTED_4), WANTED_4) == []


@pytest.mark.parametrize(
    ("change", "drift"),
    [
        (lambda live: live["users"][0].update({"password_hash": "other"}), ["user celery"]),
        (lambda live: live["users"][0].update(tags=["administrator"]), ["user celery"]),
        (lambda live: live["users"].pop(0), ["user celery"]),
        (lambda live: live["vhosts"].pop(), ["vhost celery"]),
        (lambda live: live["permissions"][0].update(read="^$"), ["permissions celery@celery"]),
        (
            lambda live: live["policies"][0]["definition"].update({"delivery-limit": 20}),
            ["policy celery-delivery-limit"],
        ),
        (lambda live: live.pop("policies"), ["policy celery-delivery-limit"]),
    ],
    ids=["password", "tags", "no user", "no vhost", "permissions", "policy limit", "no policies"],
)
def test_each_difference_is_named(change, drift: list[str]) -> None:
    live = live_export(WANTED_4)
    change(live)
    assert rabbitmq_definitions_drift(live, WANTED_4) == drift


def test_what_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="mappings"):
        rabbitmq_definitions_drift("{}", WANTED_4)
