from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.service_account import login_defs_minimums, service_account

LOGIN_DEFS = """
# UID_MIN 5
UID_MIN                  1000
UID_MAX                 60000
SYS_UID_MAX               999
GID_MIN                  2000 # a comment
"""
# getent's fields after the name: password, uid, gid, gecos, home, shell (passwd) or password, gid, members.
CELERY = ["x", "999", "999", "", "/var/lib/celery", "/usr/sbin/nologin"]


def test_login_defs_minimums() -> None:
    assert login_defs_minimums(LOGIN_DEFS) == {"UID_MIN": 1000, "GID_MIN": 2000}
    assert login_defs_minimums("") == {"UID_MIN": 1000, "GID_MIN": 1000}
    assert login_defs_minimums("UID_MIN 500\nUID_MIN 700\n")["UID_MIN"] == 700


def test_a_missing_account_is_created() -> None:
    assert service_account(None, LOGIN_DEFS, "celery_beat_user") == "missing"
    assert service_account(None, LOGIN_DEFS, "celery_beat_group", kind="group") == "missing"


@pytest.mark.parametrize("shell", ["/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"])
def test_an_existing_system_user_without_login_is_used(shell: str) -> None:
    assert service_account([*CELERY[:5], shell], LOGIN_DEFS, "celery_beat_user") == "system"


def test_an_existing_system_group_is_used() -> None:
    assert service_account(["x", "1999", ""], LOGIN_DEFS, "celery_beat_group", kind="group") == "system"


@pytest.mark.parametrize(
    ("entry", "kind", "expected"),
    [
        (["x", "0", "0", "root", "/root", "/bin/bash"], "user", "id 0 (root)"),
        (["x", "0", ""], "group", "id 0 (root)"),
        (["x", "1000", "1000", "Deploy", "/home/deploy", "/bin/bash"], "user", "id 1000 >= UID_MIN 1000"),
        # a person's account keeps its id even with its login taken away
        (["x", "1001", "1001", "", "/home/ops", "/usr/sbin/nologin"], "user", "id 1001 >= UID_MIN 1000"),
        (["x", "65534", "65534", "nobody", "/nonexistent", "/usr/sbin/nologin"], "user", "id 65534 >= UID_MIN"),
        (["x", "2000", "deploy"], "group", "id 2000 >= GID_MIN 2000"),
        (["x", "4", "65534", "sync", "/bin", "/bin/sync"], "user", "login shell '/bin/sync'"),
        (["x", "998", "998", "", "/var/lib/app", "/bin/bash"], "user", "login shell '/bin/bash'"),
        (["x", "998", "998", "", "/var/lib/app", ""], "user", "login shell '/bin/sh (empty)'"),
    ],
)
def test_root_people_and_login_shells_are_refused(entry: list[str], kind: str, expected: str) -> None:
    with pytest.raises(AnsibleFilterError) as error:
        service_account(entry, LOGIN_DEFS, f"celery_beat_{kind}", kind=kind, name="deploy")
    message = str(error.value)
    assert f"celery_beat_{kind} is {kind} 'deploy'" in message
    assert expected in message
    assert f"Set celery_beat_{kind} to a system {kind}" in message


def test_malformed_entries_and_kinds_are_errors() -> None:
    with pytest.raises(AnsibleFilterError, match="not a getent user entry"):
        service_account(["x"], LOGIN_DEFS, "celery_beat_user")
    with pytest.raises(AnsibleFilterError, match="kind must be user or group"):
        service_account(None, LOGIN_DEFS, "celery_beat_user", kind="shadow")
