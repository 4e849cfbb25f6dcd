from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.celery_url import celery_url
from ansible_collections.reliable.celery.plugins.filter.url_quote import url_quote
from kombu.utils.url import url_to_parts

PASSWORDS = [
    "Demo/Worker#Secret?4b1e@93a7",
    "percent%40is-not-an-at-sign",
    "colons:and:brackets[]:!$&'()*+,;=",
    "unicode-é-password-0123",
    "%2F%3F%23%25" * 4,
]


@pytest.mark.parametrize("password", PASSWORDS)
def test_kombu_reads_back_exactly_the_quoted_password(password: str) -> None:
    url = f"redis://worker:{url_quote(password)}@broker:6379/0"
    kombu = url_to_parts(url)
    assert (kombu.username, kombu.password, kombu.hostname, kombu.port, kombu.path) == (
        "worker", password, "broker", 6379, "0",
    )  # fmt: skip
    parts = celery_url(url, "celery_worker_broker_url")
    assert (parts["userid"], parts["hostname"], parts["port"], parts["virtual_host"]) == ("worker", "broker", 6379, "0")
    assert parts["has_password"]


def test_a_percent_sign_is_encoded_so_kombu_does_not_decode_it() -> None:
    assert url_quote("a%40b") == "a%2540b"
    assert url_quote("/") == "%2F"


def test_non_strings_are_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="expected a string"):
        url_quote(12)
