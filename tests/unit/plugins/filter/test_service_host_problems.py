from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.service_host_problems import service_host_problems

SERVICE = {
    "variable_prefix": "celery_worker",
    "user": "celery",
    "group": "celery",
    "app_path": "",
    "app_path_mutable": False,
}
DIRECTORIES = [
    {"path": "/var/lib/celery", "variable": "home"},
    {"path": "/etc/celery", "variable": "config_dir"},
]
ENTERABLE = {"exists": True, "isdir": True, "service_may_enter": True, "owner": "root", "group": "root", "mode": "0755"}
MISSING = {"exists": False, "isdir": False, "service_may_enter": False}
APP = {**ENTERABLE, "links": [], "changed_since": []}


def host(**paths: dict) -> dict:
    found = {"/var/lib/celery": ENTERABLE, "/etc/celery": ENTERABLE, **paths}
    return {"paths": found, "app_directory": found.pop("app", APP)}


def problems(found: dict, **service: object) -> list[str]:
    return service_host_problems(found, {**SERVICE, **service}, DIRECTORIES, ["/var/lib/celery"])


def test_a_host_that_has_what_the_service_needs_has_no_problem() -> None:
    assert problems(host()) == []
    assert problems(host(**{"/var/lib/celery": MISSING, "/etc/celery": MISSING})) == []


def test_a_home_the_user_cannot_enter_names_its_variable_owner_and_mode() -> None:
    closed = {**ENTERABLE, "service_may_enter": False, "mode": "0700"}
    found = problems(host(**{"/var/lib/celery": closed}))
    assert found[0] == (
        "celery_worker_home: /var/lib/celery exists and is owned by root:root with mode 0700, which the user celery"
        " (group celery) cannot enter. The role never changes a directory it did not create: choose another path (for"
        " a service with its own user, its own home), or change that directory yourself."
    )
    # The same directory is a root of the state directories: that problem too.
    assert found[1].startswith("celery_worker: systemd keeps the service's state below /var/lib/celery, which exists")
    assert "the role never changes a directory it did not create: give each service user its own home" in found[1]


def test_only_the_home_must_let_the_user_in_but_every_directory_must_be_one() -> None:
    assert problems(host(**{"/etc/celery": {**ENTERABLE, "service_may_enter": False}})) == []
    file = {**ENTERABLE, "isdir": False}
    assert problems(host(**{"/etc/celery": file})) == [
        "celery_worker_config_dir: /etc/celery exists and is not a directory (a symbolic link is not followed)."
        " The role never changes a directory it did not create: choose another path (for a service with its own"
        " user, its own home), or change that directory yourself."
    ]


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ({**APP, "isdir": False}, "celery_worker_app_path: /srv/app/v1 is not a directory on this host. Put the app's"),
        (
            {**APP, "service_may_enter": False, "mode": "0700"},
            "celery_worker_app_path: /srv/app/v1 is owned by root:root with mode 0700, which the user celery (group"
            " celery) cannot enter. Put",
        ),
        (
            {**APP, "links": ["/srv/app"]},
            "celery_worker_app_path: /srv/app/v1 goes through the symbolic link /srv/app,",
        ),
        (
            {**APP, "changed_since": ["abc"]},
            "celery_worker_app_path: the code in /srv/app/v1 changed (files added, removed or rewritten) since the"
            " release abc was built",
        ),
    ],
    ids=["not a directory", "closed", "through a link", "changed in place"],
)
def test_app_code_the_user_cannot_read_or_that_can_change_is_a_problem(app: dict, message: str) -> None:
    found = problems(host(app=app), app_path="/srv/app/v1")
    assert len(found) == 1
    assert found[0].startswith(message), found[0]


def test_a_mutable_app_directory_may_be_a_link_and_change_but_must_be_readable() -> None:
    changing = {**APP, "links": ["/srv/app"], "changed_since": ["abc"]}
    assert problems(host(app=changing), app_path="/srv/app/current", app_path_mutable=True) == []
    unreadable = {**changing, "service_may_enter": False}
    assert len(problems(host(app=unreadable), app_path="/srv/app/current", app_path_mutable=True)) == 1


def test_without_app_path_the_app_directory_is_not_looked_at() -> None:
    assert problems(host(app={})) == []


def test_another_value_than_celery_service_info_s_result_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="not celery_service_info's result"):
        problems({"paths": {}})
