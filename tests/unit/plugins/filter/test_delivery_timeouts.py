from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.delivery_timeouts import (
    DEFAULTS,
    delivery_timeouts,
    host_delivery_timeouts,
    redis_visibility_timeout,
    whole_number,
)


def test_one_formula_gives_every_timeout() -> None:
    assert delivery_timeouts(600, 30, 60) == {
        "visibility_timeout_seconds": 690,
        "consumer_timeout_ms": 690_000,
    }


def test_numbers_given_as_strings_on_the_command_line_are_numbers() -> None:
    assert delivery_timeouts("40", "0", " 5 ")["visibility_timeout_seconds"] == 45


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        ((0, 0, 60), "celery_worker_max_task_seconds"),
        ((10, -1, 60), "celery_worker_max_eta_seconds"),
        ((10, 0, "ten"), "celery_worker_timeout_margin_seconds"),
        ((True, 0, 60), "celery_worker_max_task_seconds"),
        ((1.5, 0, 60), "celery_worker_max_task_seconds"),
    ],
)
def test_bad_numbers_name_the_variable(args: tuple, variable: str) -> None:
    with pytest.raises(AnsibleFilterError, match=variable):
        delivery_timeouts(*args, prefix="celery_worker")


def test_a_hosts_value_is_its_roles_else_the_collection_wide_else_the_default() -> None:
    assert host_delivery_timeouts({}, "broker")["consumer_timeout_ms"] == 660_000
    assert host_delivery_timeouts({"celery_max_task_seconds": 300}, "worker")["visibility_timeout_seconds"] == 360
    both = {"celery_max_task_seconds": 300, "celery_worker_max_task_seconds": "900", "celery_max_eta_seconds": 40}
    assert host_delivery_timeouts(both, "worker")["visibility_timeout_seconds"] == 1000
    assert host_delivery_timeouts(both, "broker")["visibility_timeout_seconds"] == 400


@pytest.mark.parametrize("role", ["worker", "broker"])
def test_the_defaults_for_hostvars_are_the_roles_own(role: str) -> None:
    """site.yml's check reads hostvars, where roles' defaults are not: it must assume the same."""
    defaults = (Path(__file__).parents[4] / "roles" / f"celery_{role}" / "defaults" / "main.yml").read_text()
    for name, value in DEFAULTS.items():
        line = f'celery_{role}_{name}: "{{{{ celery_{name} | default({value}) }}}}"'
        assert re.search(rf"^{re.escape(line)}$", defaults, re.MULTILINE), line


@pytest.mark.parametrize(("value", "expected"), [(5, 5), ("5", 5), (" 12 ", 12), (0, 0)])
def test_whole_number_takes_numbers_and_digits(value: object, expected: int) -> None:
    assert whole_number(value, "celery_worker_restart_seconds") == expected


@pytest.mark.parametrize("value", ["-5", "5s", "", True, None, 2.5, [1]])
def test_whole_number_refuses_anything_else_naming_the_variable(value: object) -> None:
    with pytest.raises(AnsibleFilterError, match=r"celery_worker_restart_seconds must be a whole number >= 0, got"):
        whole_number(value, "celery_worker_restart_seconds")


def test_whole_number_has_a_minimum() -> None:
    with pytest.raises(AnsibleFilterError, match=r"celery_worker_ready_timeout_seconds must be a whole number >= 1"):
        whole_number("0", "celery_worker_ready_timeout_seconds", 1)


@pytest.mark.parametrize(("value", "expected"), [(0, 0), ("0", 0), (10, 10), ("30", 30)])
def test_whole_number_takes_the_value_that_turns_a_feature_off(value: object, expected: int) -> None:
    assert whole_number(value, "celery_worker_watchdog_seconds", 10, zero_turns_off=True) == expected


@pytest.mark.parametrize("value", [5, "9", "-1", "off"])
def test_whole_number_below_the_minimum_is_refused_unless_it_turns_the_feature_off(value: object) -> None:
    with pytest.raises(
        AnsibleFilterError, match=r"celery_worker_watchdog_seconds must be 0 \(off\) or a whole number >= 10, got"
    ):
        whole_number(value, "celery_worker_watchdog_seconds", 10, zero_turns_off=True)


def test_with_leases_the_visibility_timeout_is_the_lease_and_at_least_ten_seconds() -> None:
    timeouts = delivery_timeouts(240, 0, 60)
    assert redis_visibility_timeout(timeouts, True, "60") == {"visibility_timeout_seconds": 60, "minimum_seconds": 10}


def test_without_leases_the_visibility_timeout_outlasts_the_longest_task() -> None:
    timeouts = delivery_timeouts(240, 0, 60)
    assert redis_visibility_timeout(timeouts, False, 60) == {"visibility_timeout_seconds": 300, "minimum_seconds": 300}


@pytest.mark.parametrize("leases", [True, False])
def test_a_lease_below_ten_seconds_is_refused_naming_the_variable(leases: bool) -> None:
    with pytest.raises(AnsibleFilterError, match="celery_worker_redis_lease_seconds must be a whole number >= 10"):
        redis_visibility_timeout(delivery_timeouts(240), leases, 5)
