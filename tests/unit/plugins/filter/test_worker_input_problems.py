from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.worker_input_problems import worker_input_problems

EFFECTIVE = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_transport_options": {"visibility_timeout": 60},
    "result_backend_transport_options": {"visibility_timeout": 4000},
}
FOUND = {
    "app_packages": ["example"],
    "app_requirements_file": "",
    "app_path": "",
    "dead_letter_queue": "celery.dead_letters",
    "instances": [{"queues": ["celery"]}, {"queues": ["reports", "slow"]}],
    "settings": {},
    "effective_settings": EFFECTIVE,
    "allow_prefetch_with_acks_late": False,
    "broker_is_redis": True,
    "backend_is_redis": True,
    "leases": True,
    "redis_minimum_seconds": 10,
    "visibility_timeout_seconds": 3960,
    "start_canary_task": "reliable_celery.start_canary",
    "start_canary_seconds": 30,
    "ready_timeout": 120,
}
SETTINGS_PROBLEM = "celery_worker_settings would lose or duplicate tasks: task_acks_late and task_reject_on_worker_lost"


def problems(**found: object) -> list[str]:
    return worker_input_problems({**FOUND, **found})


def settings(**changed: object) -> dict:
    return {**EFFECTIVE, **changed}


def test_the_role_s_own_profile_has_no_problem() -> None:
    assert problems() == []
    assert problems(app_packages=[], app_path="/srv/app/v1") == []
    assert problems(broker_is_redis=False, backend_is_redis=False, effective_settings={**EFFECTIVE, "x": 1}) == []


def test_no_app_is_a_problem() -> None:
    assert problems(app_packages=[]) == [
        "celery_worker_app_packages, celery_worker_app_requirements_file or celery_worker_app_path must name the app"
        " to install or the directory of its code."
    ]


def test_a_start_canary_is_decided_before_the_restart_stops_waiting() -> None:
    assert problems(start_canary_seconds=119) == []
    assert problems(start_canary_seconds=0, start_canary_task="") == []
    assert problems(start_canary_seconds=120) == [
        "celery_worker_start_canary_seconds must be 0 (no start canary) or less than"
        " celery_worker_ready_timeout_seconds (120), got 120."
    ]


@pytest.mark.parametrize("task", ["", " ", None, 5])
def test_a_start_canary_names_a_task(task: object) -> None:
    assert problems(start_canary_task=task) == [
        f"celery_worker_start_canary_task must name a task of the app (a non-empty string), got '{task}'."
    ]


@pytest.mark.parametrize("queue", ["", None, 5, "slow"])
def test_a_dead_letter_queue_must_be_a_name_no_instance_consumes(queue: object) -> None:
    assert problems(dead_letter_queue=queue) == [
        "celery_worker_dead_letter_queue must be a queue name that no instance of celery_worker_instances consumes"
        f" (their dead letters would run again), got '{queue}'."
    ]


@pytest.mark.parametrize(
    "found",
    [
        {"effective_settings": settings(task_acks_late=False)},
        {"effective_settings": settings(task_reject_on_worker_lost="no")},
        {"effective_settings": settings(worker_prefetch_multiplier=4)},
        {"effective_settings": settings(worker_prefetch_multiplier=0), "allow_prefetch_with_acks_late": True},
        {"effective_settings": settings(broker_transport_options={"visibility_timeout": 5})},
        {"effective_settings": settings(result_backend_transport_options={"visibility_timeout": "60"})},
        {"settings": {"worker_state_db": "/tmp/x"}},  # noqa: S108 - a value the role refuses
    ],
    ids=[
        "acks late off",
        "reject off",
        "prefetch 4",
        "prefetch 0",
        "broker visibility",
        "backend visibility",
        "state db",
    ],
)
def test_settings_that_would_lose_or_duplicate_tasks_are_a_problem(found: dict) -> None:
    (message,) = problems(**found)
    assert message.startswith(SETTINGS_PROBLEM)
    assert "a Redis visibility_timeout must be at least 10 s with celery_worker_redis_leases" in message


def test_more_prefetch_is_allowed_when_asked_for_and_strings_count_as_ansible_reads_them() -> None:
    assert (
        problems(effective_settings=settings(worker_prefetch_multiplier="4"), allow_prefetch_with_acks_late="yes") == []
    )
    assert problems(effective_settings=settings(task_acks_late="true", worker_prefetch_multiplier="1")) == []


def test_without_leases_the_message_gives_the_longest_task_s_sum() -> None:
    (message,) = problems(leases=False, effective_settings=settings(broker_transport_options={"visibility_timeout": 5}))
    assert (
        "at least celery_worker_max_task_seconds + celery_worker_max_eta_seconds + celery_worker_timeout_margin_seconds"
        " = 3960 s without celery_worker_redis_leases" in message
    )


def test_other_values_than_the_worker_s_variables_are_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="not the worker's variables"):
        worker_input_problems({"app_packages": ["x"]})
