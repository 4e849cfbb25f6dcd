from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.plugin_utils.problems import problems


def test_the_messages_of_every_check_in_order() -> None:
    checks = (lambda found: None, lambda found: f"one {found['a']}", lambda found: (f"two {n}" for n in (1, 2)))
    assert problems("f", "x", {"a": 1}, checks) == ["one 1", "two 1", "two 2"]


def test_a_missing_key_is_named_and_a_wrong_type_never_shows_a_value() -> None:
    with pytest.raises(AnsibleFilterError, match=r"^f: not the thing: missing 'a'$"):
        problems("f", "the thing", {}, (lambda found: found["a"],))
    with pytest.raises(AnsibleFilterError, match=r"^f: not the thing: a value of the wrong type \(ValueError\)$"):
        problems("f", "the thing", {"a": "secret"}, (lambda found: int(found["a"]),))
