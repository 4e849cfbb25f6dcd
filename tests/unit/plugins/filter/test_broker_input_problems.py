from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.broker_input_problems import broker_input_problems

FOUND = {
    "type": "rabbitmq",
    "password": "Broker-Secret-7f3a-0d2c9e",
    "redis_port": 6379,
    "rabbitmq_port": 5672,
    "redis_maxmemory": "0",
    "rabbitmq_user": "celery",
    "rabbitmq_vhost": "celery",
}


def problems(**found: object) -> list[str]:
    return broker_input_problems({**FOUND, **found})


def test_the_defaults_have_no_problem() -> None:
    assert problems() == []
    assert problems(type="redis", password="") == [], "the password is RabbitMQ's"
    assert problems(redis_maxmemory="512mb") == problems(redis_maxmemory="2G") == []


@pytest.mark.parametrize("password", ["short-but-fine", "a password with spaces", 'quote"d-password-here', None])
def test_a_rabbitmq_password_that_cannot_go_into_a_url_is_refused_without_showing_it(password: object) -> None:
    (message,) = problems(password=password)
    assert message.startswith("celery_broker_password must be at least 16 characters without whitespace")
    assert str(password) not in message


@pytest.mark.parametrize(
    ("found", "start"),
    [
        ({"redis_port": 0}, "celery_broker_redis_port must be 1-65535 (got 0);"),
        ({"rabbitmq_port": 25672}, "celery_broker_redis_port must be 1-65535 (got 6379);"),
        ({"rabbitmq_port": True}, "celery_broker_redis_port must be 1-65535"),
        (
            {"redis_maxmemory": "lots"},
            "celery_broker_redis_maxmemory must be a size such as 0, 512mb or 2gb (got lots).",
        ),
        ({"rabbitmq_user": "guest"}, "celery_broker_rabbitmq_user and celery_broker_rabbitmq_vhost must be 1-64"),
        ({"rabbitmq_vhost": "/"}, "celery_broker_rabbitmq_user and celery_broker_rabbitmq_vhost must be 1-64"),
    ],
    ids=["redis port", "erlang port", "port not a number", "maxmemory", "guest", "vhost"],
)
def test_each_wrong_variable_is_named(found: dict, start: str) -> None:
    (message,) = problems(**found)
    assert message.startswith(start), message


def test_other_values_than_the_broker_s_variables_are_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="not the broker's variables: missing 'password'"):
        broker_input_problems({"type": "redis"})
