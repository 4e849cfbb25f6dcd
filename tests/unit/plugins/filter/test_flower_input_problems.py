from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.flower_input_problems import flower_input_problems

SECRET = "Flower-Secret-0123"  # noqa: S105 - a test password
FOUND = {
    "version": "2.2.0",
    "port": 5555,
    "url_prefix": "/tools/flower/",
    "address": "0.0.0.0",  # noqa: S104 - the address checked, nothing binds
    "is_loopback": False,
    "basic_auth": [{"username": "ops", "password": SECRET}],
    "options": {"max_tasks": 1000},
    "allowed_options": ["max_tasks", "purge_offline_workers"],
}


def problems(**found: object) -> list[str]:
    return flower_input_problems({**FOUND, **found})


def test_an_authenticated_flower_with_known_options_has_no_problem() -> None:
    assert problems() == []
    assert problems(address="127.0.0.1", is_loopback=True, basic_auth=[], url_prefix="") == []


@pytest.mark.parametrize(
    ("found", "start"),
    [
        ({"version": "latest"}, "celery_flower_version must be an exact version such as 2.2.0 (got 'latest')."),
        ({"port": 80}, "celery_flower_port must be 1024-65535 (got 80;"),
        ({"url_prefix": "tools flower"}, "celery_flower_port must be 1024-65535 (got 5555;"),
        (
            {"basic_auth": []},
            "celery_flower_address is '0.0.0.0', not a loopback address, and celery_flower_basic_auth",
        ),
        ({"options": {"port": 1}}, "celery_flower_options may set only max_tasks, purge_offline_workers"),
        ({"options": {"max_tasks": "1\n2"}}, "celery_flower_options may set only"),
    ],
    ids=["version", "port", "url prefix", "open to other hosts", "unknown option", "multi-line value"],
)
def test_each_wrong_variable_is_named(found: dict, start: str) -> None:
    (message,) = problems(**found)
    assert message.startswith(start), message


def test_bad_users_are_named_and_passwords_never_shown() -> None:
    users = [
        {"username": "ops", "password": "short"},
        {"username": "ops", "password": "has,a,comma-in-it"},
        {"username": "a b", "password": SECRET},
        {"username": "", "password": "two\nlines-of-text"},
    ]
    (message,) = problems(basic_auth=users)
    assert '(refused: "a b", "", "ops")' in message
    assert '(refused for: "ops", "")' in message
    for user in users:
        assert user["password"] not in message


def test_other_values_than_flower_s_variables_are_refused_without_showing_them() -> None:
    with pytest.raises(AnsibleFilterError, match="not Flower's variables: missing 'password'"):
        flower_input_problems({**FOUND, "basic_auth": [{"username": "x"}]})
