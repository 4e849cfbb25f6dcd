from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.celery_requirement import celery_requirement, kombu_requirement


def test_redis_urls_and_gevent_pools_add_their_extras_once_sorted() -> None:
    requirement = celery_requirement("5.7.0", ["redis", "rediss"], ["msgpack"], ["gevent", "prefork"])
    assert requirement == "celery[gevent,msgpack,redis]==5.7.0"


def test_redis_through_sentinel_needs_the_redis_extra() -> None:
    assert celery_requirement("5.7.0", ["sentinel", ""]) == "celery[redis]==5.7.0"


def test_amqp_needs_no_extra() -> None:
    assert celery_requirement("5.7.0", ["amqp", "rpc", ""]) == "celery==5.7.0"


@pytest.mark.parametrize("version", ["latest", ">=5.7", "5.7.0; rm -rf /", "", None, "--index-url=x"])
def test_only_exact_versions(version: object) -> None:
    with pytest.raises(AnsibleFilterError, match="celery_worker_celery_version must be an exact version"):
        celery_requirement(version, variable="celery_worker_celery_version")


@pytest.mark.parametrize("extra", ["redis]", "a,b", "", "--pre"])
def test_bad_extras_are_refused(extra: str) -> None:
    with pytest.raises(AnsibleFilterError, match="extras"):
        celery_requirement("5.7.0", extras=[extra])


@pytest.mark.parametrize(
    ("version", "pin"), [("5.7.0", "kombu==5.7.*"), ("5.7.2", "kombu==5.7.*"), ("5.6.1", "kombu==5.6.*")]
)
def test_kombu_is_pinned_to_celerys_minor(version: str, pin: str) -> None:
    assert kombu_requirement(version) == pin
