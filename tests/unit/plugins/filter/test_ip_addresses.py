from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.ip_addresses import bind_addresses, ip_address


@pytest.mark.parametrize(
    ("value", "loopback", "is_loopback"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("0.0.0.0", "127.0.0.1", False),  # noqa: S104 - a listening address under test
        ("::", "[::1]", False),
        ("::1", "[::1]", True),
        ("0:0:0:0:0:0:0:1", "[::1]", True),
        ("10.0.0.5", "10.0.0.5", False),
        ("fe80::1", "[fe80::1]", False),
    ],
)
def test_addresses_and_where_a_local_client_reaches_them(value: str, loopback: str, is_loopback: bool) -> None:
    parsed = ip_address(value, "celery_flower_address")
    assert (parsed["loopback"], parsed["is_loopback"]) == (loopback, is_loopback)


@pytest.mark.parametrize("value", ["flower.example.com", "256.1.1.1", "1::2::3", "", "127.0.0.1:80", "[::1]"])
def test_what_is_not_an_address_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(AnsibleFilterError, match="celery_flower_address must be an IP address"):
        ip_address(value, "celery_flower_address")


def test_redis_takes_optional_addresses_rabbitmq_does_not() -> None:
    parsed = bind_addresses(["127.0.0.1", "-10.0.0.5"], "celery_broker_bind_addresses", optional_prefix=True)
    assert [(entry["address"], entry["optional"]) for entry in parsed] == [("127.0.0.1", False), ("10.0.0.5", True)]
    with pytest.raises(AnsibleFilterError, match=r"refused: \['-10.0.0.5'\]"):
        bind_addresses(["127.0.0.1", "-10.0.0.5"], "celery_broker_bind_addresses")


@pytest.mark.parametrize("values", [[], ["redis.example"], ["1::2::3"], "127.0.0.1"])
def test_bad_lists_are_refused(values: object) -> None:
    with pytest.raises(AnsibleFilterError, match="celery_broker_bind_addresses must list"):
        bind_addresses(values, "celery_broker_bind_addresses")


@pytest.mark.parametrize(
    ("values", "overlap"),
    [
        (["::", "127.0.0.1"], True),
        (["0.0.0.0", "10.0.0.5"], True),  # noqa: S104
        (["0.0.0.0", "::1"], False),  # noqa: S104
        (["::", "::"], False),
        (["127.0.0.1", "::1", "10.0.0.5"], False),
    ],
)
def test_rabbitmq_wildcards_must_stand_alone(values: list[str], overlap: bool) -> None:
    if overlap:
        with pytest.raises(AnsibleFilterError, match="overlap"):
            bind_addresses(values, "v", exclusive_wildcards=True)
    else:
        assert bind_addresses(values, "v", exclusive_wildcards=True)
