from __future__ import annotations

import pytest
from ansible_collections.reliable.celery.plugins.test.account_name import account_name


@pytest.mark.parametrize("value", ["celery", "celery-flower", "_svc", "a" * 32])
def test_account_names(value: str) -> None:
    assert account_name(value)


@pytest.mark.parametrize("value", ["Celery", "celery admin", "1celery", "-x", "a" * 33, "", None, 7])
def test_not_account_names(value: object) -> None:
    assert not account_name(value)
