from __future__ import annotations

import pytest
from ansible_collections.reliable.celery.plugins.test.object_path import object_path


@pytest.mark.parametrize("value", ["proj.celery:app", "celery.beat:PersistentScheduler", "_p:_a"])
def test_object_paths(value: str) -> None:
    assert object_path(value)


@pytest.mark.parametrize("value", ["proj", "proj/celery.py", "proj.celery:", "1proj:app", "p:a.b", None, 3])
def test_not_object_paths(value: object) -> None:
    assert not object_path(value)
