from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.environment_file import environment_file


def test_lines_are_sorted_and_quoted() -> None:
    assert environment_file({"B": 2, "A": "x y"}) == 'A="x y"\nB="2"\n'


def test_backslash_and_quote_are_escaped_and_dollar_is_kept() -> None:
    assert environment_file({"T": 'a"b\\c$HOME'}) == 'T="a\\"b\\\\c$HOME"\n'


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", ""])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(AnsibleFilterError, match="not an environment variable name"):
        environment_file({name: "v"})


def test_a_multiline_value_is_refused_without_showing_it() -> None:
    with pytest.raises(AnsibleFilterError) as error:
        environment_file({"SECRET": "top\nsecret"})
    assert "SECRET" in str(error.value)
    assert "top" not in str(error.value)


def test_a_non_mapping_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="mapping"):
        environment_file(["A=1"])
