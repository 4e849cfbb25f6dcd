from __future__ import annotations

import pytest
from ansible_collections.reliable.celery.plugins.test.exact_version import exact_version


@pytest.mark.parametrize("value", ["2.2.0", "5.7.0rc1", "2.2.0.post1", "1"])
def test_exact_versions(value: str) -> None:
    assert exact_version(value)


@pytest.mark.parametrize("value", ["latest", ">=2.2", "2.2.*", "--pre", "", None, 2.2])
def test_not_exact_versions(value: object) -> None:
    assert not exact_version(value)
