from __future__ import annotations

import base64
import hashlib

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.rabbitmq_password_hash import rabbitmq_password_hash


def test_the_hash_is_rabbitmqs_salted_sha256() -> None:
    raw = base64.b64decode(rabbitmq_password_hash("Sup3r-Secret", "celery@broker"))
    salt, digest = raw[:4], raw[4:]
    assert digest == hashlib.sha256(salt + b"Sup3r-Secret").digest()
    assert all(33 <= byte <= 126 for byte in salt)


def test_it_equals_what_the_role_wrote_before_so_upgrades_change_nothing() -> None:
    # The value the role's earlier Jinja implementation rendered for this user, host and password.
    assert rabbitmq_password_hash("Sup3r-Secret-Pässword/#?", "celery@localhost") == (
        "d3QyWriIaB9kefmvWdQGNGQlRH22cm5FU1fOAS0eUa44DSpH"
    )


def test_same_input_same_hash_and_a_new_password_a_new_one() -> None:
    first = rabbitmq_password_hash("password-one-1234", "u@h")
    assert first == rabbitmq_password_hash("password-one-1234", "u@h")
    assert first != rabbitmq_password_hash("password-two-1234", "u@h")


def test_an_empty_password_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="non-empty"):
        rabbitmq_password_hash("", "u@h")
