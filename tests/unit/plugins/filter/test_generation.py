from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.generation import generation


def test_equal_inputs_give_equal_generations_whatever_the_key_order() -> None:
    assert generation({"a": 1, "b": [1, 2]}, "base") == generation({"b": [1, 2], "a": 1}, "base")


def test_any_change_gives_another_generation() -> None:
    base = generation({"app": "pkg.celery:app"}, "g1")
    assert generation({"app": "pkg.celery:nope"}, "g1") != base
    assert generation({"app": "pkg.celery:app"}, "g2") != base
    assert generation({"app": "pkg.celery:app"}) != base


def test_the_generation_is_16_hex_characters() -> None:
    value = generation("x")
    assert len(value) == 16
    assert int(value, 16) >= 0


def test_values_json_cannot_hold_are_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="cannot digest a value of type object"):
        generation(object())
