from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.celery_url import celery_url
from kombu.utils.url import url_to_parts

SECRET = "s3cr3t-Pa55word"  # noqa: S105 - a test value


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@broker:6379/0",
        f"rediss://default:{SECRET}@10.0.0.5:6380/2?ssl_cert_reqs=required",
        f"amqp://celery:{SECRET}@rabbit:5672/celery",
        f"pyamqp://celery:{SECRET}@[::1]:5672/",
        "amqp://celery:pa%2Fss%40word@rabbit/vhost%2Fa",
        "REDIS://broker",
        f"sentinel://celery:{SECRET}@10.0.0.1:26379/0",
    ],
)
def test_parts_are_those_kombu_finds(url: str) -> None:
    kombu = url_to_parts(url)
    parts = celery_url(url, "celery_worker_broker_url")
    assert parts["scheme"] == kombu.scheme.lower()
    assert (parts["hostname"], parts["port"], parts["userid"]) == (kombu.hostname, kombu.port, kombu.username)
    assert parts["virtual_host"] == kombu.path
    assert parts["has_password"] == bool(kombu.password)
    assert parts["query"] == kombu.query
    assert SECRET not in repr(parts)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "must be a broker URL"),
        ("broker:6379", "must be a URL"),
        ("sqs://key@queue", "has scheme 'sqs'"),
        (f"redis://:{SECRET}@broker\n:6379/0", "one line"),
        (f"redis://:{SECRET}@broker:port/0", "cannot be parsed"),
        (f"redis://:{SECRET}@broker:70000/0", "cannot be parsed"),
        ("redis://:ab/cd@broker:6379/0", "cannot be parsed"),
        ("redis://:abcd#ef@broker:6379/0", "cannot be parsed"),
        ("redis:///0", "has no host"),
        ("redis://:#abcd@broker/0", "has no host"),
        ("amqp://u:p@[::1/vhost", "cannot be parsed"),
    ],
)
def test_what_kombu_cannot_use_is_refused_naming_the_variable_only(url: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message) as error:
        celery_url(url, "celery_beat_broker_url")
    assert "celery_beat_broker_url" in str(error.value)
    for secret_part in (SECRET, "ab/cd", "abcd", "cd@"):
        assert secret_part not in str(error.value)


def test_a_password_with_a_slash_leaks_nothing_through_urllibs_port_message() -> None:
    # urllib says "Port could not be cast to integer value as 'se'" for redis://:se/cret@host.
    with pytest.raises(AnsibleFilterError) as error:
        celery_url("redis://:se/cret@host:6379/0", "celery_flower_broker_url")
    assert "'se'" not in str(error.value)


def test_a_backend_may_be_empty_or_any_scheme_and_redis_is_parsed() -> None:
    none = {"scheme": "", "is_redis": False, "is_sentinel": False}
    assert celery_url("", "celery_worker_result_backend", kind="backend") == none
    assert celery_url("rpc://", "celery_worker_result_backend", kind="backend") == {**none, "scheme": "rpc"}
    assert celery_url("db+postgresql://u:p@db/x", "v", kind="backend")["scheme"] == "db+postgresql"
    assert celery_url(f"redis://:{SECRET}@b:6379/1", "v", kind="backend")["virtual_host"] == "1"
    # Celery's Redis backend splits no ';': the URL is one, whatever is in its password.
    assert celery_url("redis://:se;cret@b:6379/1", "v", kind="backend")["hostname"] == "b"
    with pytest.raises(AnsibleFilterError, match="has no host"):
        celery_url("redis://:#a@h/1", "v", kind="backend")


def test_a_non_string_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="must be a string"):
        celery_url(["redis://h"], "celery_worker_broker_url")


def test_a_broker_may_list_failover_urls_each_checked() -> None:
    nodes = ";".join(f"amqp://celery:{SECRET}@rabbit{n}:5672/celery" for n in (1, 2, 3))
    parts = celery_url(nodes, "celery_worker_broker_url")
    assert parts["hosts"] == ["rabbit1", "rabbit2", "rabbit3"]
    assert (parts["hostname"], parts["virtual_host"]) == ("rabbit1", "celery")
    assert celery_url("redis://broker:6379/0", "v")["hosts"] == ["broker"]
    with pytest.raises(AnsibleFilterError, match="different schemes"):
        celery_url(f"amqp://rabbit1;redis://:{SECRET}@broker", "celery_worker_broker_url")
    with pytest.raises(AnsibleFilterError, match="celery_worker_broker_url has no host") as error:
        celery_url(f"amqp://u:{SECRET}@rabbit1/celery;amqp:///celery", "celery_worker_broker_url")
    assert SECRET not in str(error.value)


SENTINELS = ";".join(f"sentinel://celery:{SECRET}@10.0.0.{n}:26379/0" for n in (1, 2, 3))


@pytest.mark.parametrize("kind", ["broker", "backend"])
def test_a_sentinel_url_lists_the_sentinels_of_a_redis(kind: str) -> None:
    parts = celery_url(SENTINELS, "celery_worker_broker_url", kind=kind)
    assert (parts["scheme"], parts["is_redis"], parts["is_sentinel"]) == ("sentinel", True, True)
    assert parts["hosts"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert (parts["hostname"], parts["port"], parts["userid"], parts["virtual_host"]) == (
        "10.0.0.1",
        26379,
        "celery",
        "0",
    )
    assert SECRET not in repr(parts)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (f"redis://:{SECRET}@broker:6379/0", "broker"),
        ("amqp://rabbit1;amqp://rabbit2", "broker"),
        (f"rediss://:{SECRET}@broker:6380/1", "backend"),
        ("rpc://", "backend"),
    ],
)
def test_other_urls_are_not_sentinel(url: str, kind: str) -> None:
    assert celery_url(url, "v", kind=kind)["is_sentinel"] is False


@pytest.mark.parametrize("kind", ["broker", "backend"])
@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"{SENTINELS};redis://:{SECRET}@broker:6379/0", "every URL a sentinel:// URL"),
        (f"sentinel://:{SECRET}@10.0.0.1:26379/0;sentinel:///0", "has no host"),
    ],
)
def test_every_url_of_a_sentinel_list_is_a_sentinel_url_with_a_host(url: str, message: str, kind: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message) as error:
        celery_url(url, "celery_beat_result_backend", kind=kind)
    assert "celery_beat_result_backend" in str(error.value)
    assert SECRET not in str(error.value)
