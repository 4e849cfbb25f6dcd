"""The redis_sentinel_client_settings filter (plugins/filter/redis_sentinel_client.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.celery_url import celery_url
from ansible_collections.reliable.celery.plugins.filter.redis_sentinel_client import redis_sentinel_client_settings

SECRET = "s3cr3t-Pa55word"  # noqa: S105 - a test value
SENTINELS = ";".join(f"sentinel://celery:{SECRET}@10.0.0.{n}:26379/0" for n in (1, 2, 3))
VARIABLE = "celery_worker_redis_sentinel_master"


def settings(broker_url: str, result_backend: str = "", master_name: object = "celery") -> dict:
    broker = celery_url(broker_url, "celery_worker_broker_url")
    backend = celery_url(result_backend, "celery_worker_result_backend", kind="backend")
    return redis_sentinel_client_settings(broker, backend, master_name, VARIABLE)


# A broker connection gives up on a silent primary after 5 s and asks the sentinels again.
TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 5}


def test_a_sentinel_broker_and_backend_name_the_primary_in_their_transport_options() -> None:
    assert settings(SENTINELS, SENTINELS.replace("/0", "/1"), "celery-main") == {
        "broker_transport_options": {"master_name": "celery-main", **TIMEOUTS},
        "result_backend_transport_options": {"master_name": "celery-main"},
    }


def test_each_sentinel_url_alone() -> None:
    assert settings(SENTINELS, f"redis://:{SECRET}@10.0.0.1:6379/1") == {
        "broker_transport_options": {"master_name": "celery", **TIMEOUTS}
    }
    assert settings("amqp://celery:x@rabbit/celery", SENTINELS) == {
        "result_backend_transport_options": {"master_name": "celery"}
    }


@pytest.mark.parametrize("master_name", ["", "my master", "a/b", None, 3])
def test_other_urls_need_nothing_and_check_no_name(master_name: object) -> None:
    assert settings(f"redis://:{SECRET}@10.0.0.1:6379/0", "rpc://", master_name) == {}
    assert settings("amqp://u:p@rabbit1/celery;amqp://u:p@rabbit2/celery", "", master_name) == {}


@pytest.mark.parametrize("master_name", ["", "my master", "a/b", None, 3])
def test_a_name_the_sentinels_cannot_know_is_refused_naming_the_variable(master_name: object) -> None:
    with pytest.raises(AnsibleFilterError, match=f"^{VARIABLE} must be letters, digits"):
        settings(SENTINELS, "", master_name)
