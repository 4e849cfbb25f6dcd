from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.beat_input_problems import beat_input_problems

FOUND = {
    "play_hosts": ["beat1"],
    "app": "proj.celery:app",
    "app_packages": ["proj"],
    "app_requirements_file": "",
    "app_path": "",
    "scheduler": "celery.beat:PersistentScheduler",
    "settings": {"timezone": "UTC"},
}


def problems(**found: object) -> list[str]:
    return beat_input_problems({**FOUND, **found})


def test_one_host_with_an_app_and_a_scheduler_has_no_problem() -> None:
    assert problems() == []
    assert problems(app_packages=[], app_path="/srv/proj/v1") == []


def test_a_play_of_two_hosts_is_refused_naming_them() -> None:
    assert problems(play_hosts=["a", "b"]) == [
        "celery_beat runs one beat per schedule: this play would run it on 2 hosts (a, b), and every periodic task"
        " would be sent once per beat. Apply the role in a play that targets exactly one host (playbooks/site.yml:"
        " the group named by celery_site_beat_group, default beat)."
    ]


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ({"app": "proj/celery.py"}, "celery_beat_app must be PACKAGE.MODULE:ATTRIBUTE (for example proj.celery:app)"),
        ({"app_packages": []}, "celery_beat_app_packages, celery_beat_app_requirements_file or celery_beat_app_path"),
        ({"scheduler": "django_celery_beat.schedulers"}, "celery_beat_scheduler must be PACKAGE.MODULE:CLASS"),
    ],
    ids=["app", "no app to install", "scheduler"],
)
def test_the_app_where_it_comes_from_and_the_scheduler_each_name_their_variable(found: dict, expected: str) -> None:
    (message,) = problems(**found)
    assert message.startswith(expected)


def test_every_problem_of_the_app_is_named_at_once() -> None:
    assert len(problems(app="proj/celery.py", app_packages=[], scheduler="x")) == 3


def test_settings_the_role_sets_are_refused() -> None:
    (message,) = problems(settings={"beat_scheduler": "x"})
    assert message.startswith("celery_beat_settings may not set broker_url, result_backend, beat_schedule_filename")


def test_other_values_than_beat_s_variables_are_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="not beat's variables"):
        beat_input_problems({"play_hosts": ["a"]})
