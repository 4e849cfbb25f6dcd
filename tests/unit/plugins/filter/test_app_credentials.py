from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.app_credentials import app_credentials

SECRET = "Db-Secret-0e1f2a"  # noqa: S105 - looked for in error messages, where it must not be


def test_names_that_can_be_credential_files_pass_unchanged() -> None:
    credentials = {"db_password": SECRET, "django.secret-key": "s" * 50, "0tls_key": "-----BEGIN\nKEY\n-----END\n"}
    assert app_credentials(credentials, "celery_worker_app_credentials", ["broker_url"]) is credentials


@pytest.mark.parametrize(
    ("credentials", "refused"),
    [
        ({"../db_password": SECRET}, "refused names: ../db_password"),
        ({".hidden": SECRET}, "refused names: .hidden"),
        ({"-option": SECRET}, "refused names: -option"),
        ({"a b": SECRET}, "refused names: a b"),
        ({"x" * 65: SECRET}, "refused names: " + "x" * 65),
        ({"broker_url": SECRET}, "refused names: broker_url"),
        ({"db_password": ""}, "empty or not a string: db_password"),
        ({"db_password": None}, "empty or not a string: db_password"),
        ({"port": 5432}, "empty or not a string: port"),
    ],
)
def test_a_bad_name_or_value_is_refused_naming_the_variable_never_the_value(credentials, refused) -> None:
    with pytest.raises(AnsibleFilterError) as error:
        app_credentials(credentials, "celery_worker_app_credentials", ["broker_url", "result_backend"])
    message = str(error.value)
    assert message.startswith("celery_worker_app_credentials: ")
    assert refused in message
    assert "not broker_url, result_backend (the role's own)" in message
    assert SECRET not in message


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="celery_beat_app_credentials must be a mapping"):
        app_credentials(["db_password"], "celery_beat_app_credentials")
