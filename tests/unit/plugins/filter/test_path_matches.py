"""The path_matches filter, on statuses as celery_service_info returns them."""

from __future__ import annotations

import hashlib

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.path_matches import path_matches

CONTENT = "BROKER=redis\n"
FILE = {
    "exists": True,
    "isdir": False,
    "owner": "root",
    "group": "celery",
    "mode": "0640",
    "checksum": hashlib.sha1(CONTENT.encode()).hexdigest(),  # noqa: S324
}
DIRECTORY = {"exists": True, "isdir": True, "owner": "root", "group": "celery", "mode": "0750"}


def test_a_file_with_the_content_owner_group_and_mode_matches() -> None:
    assert path_matches(FILE, "root", "celery", "0640", CONTENT)
    assert path_matches(FILE, "root", "celery", "640", CONTENT)


@pytest.mark.parametrize(
    ("owner", "group", "mode", "content"),
    [
        ("celery", "celery", "0640", CONTENT),
        ("root", "root", "0640", CONTENT),
        ("root", "celery", "0600", CONTENT),
        ("root", "celery", "0640", CONTENT + "\n"),
        ("root", "celery", "0640", None),
    ],
)
def test_any_difference_does_not_match(owner: str, group: str, mode: str, content: str | None) -> None:
    assert not path_matches(FILE, owner, group, mode, content)


def test_a_directory_matches_only_as_a_directory() -> None:
    assert path_matches(DIRECTORY, "root", "celery", "0750")
    assert not path_matches(DIRECTORY, "root", "celery", "0750", "")
    assert not path_matches({"exists": False, "isdir": False}, "root", "celery", "0750")
    assert not path_matches(None, "root", "celery", "0750")


def test_a_mode_that_is_not_octal_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="mode must be octal"):
        path_matches(FILE, "root", "celery", "u=rw", CONTENT)
