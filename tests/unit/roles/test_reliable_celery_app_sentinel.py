"""A service whose broker or result backend is Redis through Sentinel (roles/celery_base/files/reliable_celery_app.py):
the sentinels get the login and timeouts of the URL's credential, which never reaches a record; nothing takes the
sentinels' list for a RabbitMQ cluster."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from kombu.transport import redis as kombu_redis

SECRET = "s3cr3t/Pa55@word"  # noqa: S105 - a test value, percent-encoded in the URLs
ENCODED = "s3cr3t%2FPa55%40word"
SENTINELS = f"sentinel://celery:{ENCODED}@10.0.0.1:26379/0;sentinel://celery:{ENCODED}@10.0.0.2:26379/0"
LOGIN = {"username": "celery", "password": SECRET}


@pytest.fixture
def wrapper(import_wrapper):
    return import_wrapper()


def test_a_sentinel_broker_gives_the_sentinels_the_first_urls_login_and_timeouts(wrapper) -> None:
    settings = {
        "broker_url": SENTINELS,
        "broker_transport_options": {"master_name": "celery", "visibility_timeout": 60},
    }
    wrapper.sentinel_logins(settings)
    assert settings["broker_transport_options"] == {
        "master_name": "celery",
        "visibility_timeout": 60,
        "sentinel_kwargs": {**LOGIN, "socket_timeout": 1.0, "socket_connect_timeout": 1.0},
    }
    assert "result_backend_transport_options" not in settings


def test_the_sentinels_answer_within_a_second_whatever_the_servers_timeouts(wrapper) -> None:
    options = {"master_name": "celery", "socket_timeout": 5, "socket_connect_timeout": 5}
    settings = {"broker_url": SENTINELS, "broker_transport_options": options}
    wrapper.sentinel_logins(settings)
    assert settings["broker_transport_options"]["sentinel_kwargs"] == {
        **LOGIN,
        "socket_timeout": 1.0,
        "socket_connect_timeout": 1.0,
    }


def test_a_sentinel_result_backend_gets_its_own_login(wrapper) -> None:
    backend = "sentinel://results:other@10.0.0.1:26379/1;sentinel://results:other@10.0.0.2:26379/1"
    settings = {"broker_url": "amqp://celery:x@rabbit/celery", "result_backend": backend}
    wrapper.sentinel_logins(settings)
    assert settings == {
        "broker_url": "amqp://celery:x@rabbit/celery",
        "result_backend": backend,
        "result_backend_transport_options": {
            "sentinel_kwargs": {
                "username": "results",
                "password": "other",
                "socket_timeout": 1.0,
                "socket_connect_timeout": 1.0,
            }
        },
    }


@pytest.mark.parametrize(
    "settings",
    [
        {"broker_url": f"redis://celery:{ENCODED}@10.0.0.1:6379/0", "result_backend": "redis://10.0.0.1/1"},
        {"broker_url": "amqp://u:p@rabbit1/celery;amqp://u:p@rabbit2/celery", "result_backend": "rpc://"},
        {"broker_url": SENTINELS, "broker_transport_options": {"sentinel_kwargs": {"password": "mine"}}},
        {},
    ],
)
def test_other_urls_and_the_users_own_sentinel_kwargs_are_left_alone(wrapper, settings) -> None:
    before = json.dumps(settings)
    wrapper.sentinel_logins(settings)
    assert json.dumps(settings) == before


def test_a_url_without_a_user_logs_in_with_the_password_alone(wrapper) -> None:
    settings = {"broker_url": f"sentinel://:{ENCODED}@10.0.0.1:26379/0", "broker_transport_options": {}}
    wrapper.sentinel_logins(settings)
    assert settings["broker_transport_options"]["sentinel_kwargs"] == {
        "password": SECRET,
        "socket_timeout": 1.0,
        "socket_connect_timeout": 1.0,
    }


@pytest.fixture
def sentinel_service(import_wrapper, tmp_path):
    """The wrapper as a service starts with a sentinel broker URL and result backend as credentials."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "broker_url").write_text(SENTINELS + "\n")
    (credentials / "result_backend").write_text(SENTINELS.replace("/0", "/1") + "\n")
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "broker_transport_options": {"master_name": "celery", "visibility_timeout": 60},
                "result_backend_transport_options": {"master_name": "celery"},
                "worker_direct": True,
            }
        )
    )
    return import_wrapper(
        RELIABLE_CELERY_SETTINGS=str(settings),
        CREDENTIALS_DIRECTORY=str(credentials),
        RUNTIME_DIRECTORY=str(tmp_path),
        WATCHDOG_USEC="4000000000",
    )


class Sentinels(Exception):
    """What the fake Sentinel raises once it has been asked for the primary: no network in unit tests."""


class FakeSentinel:
    """redis-py's Sentinel, recording what the client gives it."""

    made: ClassVar[list] = []

    def __init__(self, sentinels, **kwargs) -> None:
        self.made.append({"sentinels": sentinels, **kwargs})

    def master_for(self, service_name, redis_class=None, **kwargs):
        raise Sentinels(service_name, kwargs)


def test_kombu_and_celery_reach_the_sentinels_with_the_login(sentinel_service, monkeypatch) -> None:
    """The settings reach redis-py's Sentinel through kombu's SentinelChannel and Celery's SentinelBackend."""
    monkeypatch.setattr(FakeSentinel, "made", [])
    monkeypatch.setattr(kombu_redis.sentinel, "Sentinel", FakeSentinel)
    sentinel_kwargs = {**LOGIN, "socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    app = sentinel_service.app

    with app.connection_for_read() as connection, pytest.raises(Sentinels) as asked:
        connection.default_channel  # noqa: B018 - the channel asks the sentinels for the primary
    assert asked.value.args == ("celery", LOGIN)
    backend = app.backend  # Celery's SentinelBackend takes the same module's Sentinel
    with pytest.raises(Sentinels) as asked:
        backend._get_pool(**backend.connparams)
    assert asked.value.args == ("celery", LOGIN)
    assert [(made["sentinels"], made["sentinel_kwargs"]) for made in FakeSentinel.made] == [
        ([("10.0.0.1", 26379), ("10.0.0.2", 26379)], sentinel_kwargs),
        ([("10.0.0.1", 26379), ("10.0.0.2", 26379)], sentinel_kwargs),
    ]


def test_the_password_reaches_no_record_and_the_sentinels_are_no_rabbitmq_cluster(sentinel_service, tmp_path) -> None:
    start = (tmp_path / "start.json").read_text()
    assert SECRET not in start
    assert ENCODED not in start
    assert sentinel_service.cluster_urls(sentinel_service.app.conf.broker_read_url) == []
    assert sentinel_service._canary is not None  # the watchdog's canary is on, the cluster's node watch is not
    assert sentinel_service._SilentNodeStep not in sentinel_service.app.steps["consumer"]
    conf = json.dumps(sentinel_service.app.conf.table())  # what `celery inspect conf` and Flower show
    assert SECRET not in conf
    assert ENCODED not in conf


def test_leases_and_poison_containment_apply_to_kombus_sentinel_channel(import_wrapper) -> None:
    """Both change kombu's Redis channel through what kombu.transport.redis.Channel has (leases on each instance),
    and SentinelChannel, a Channel, only connects otherwise: it must not have its own of any of those."""
    leases = import_wrapper().reliable_celery_leases
    assert issubclass(kombu_redis.SentinelChannel, kombu_redis.Channel)
    redis_channel = [attribute for path, attribute in leases.REQUIRED if path == "kombu.transport.redis.Channel"]
    assert redis_channel
    overridden = [
        name
        for name in redis_channel
        if getattr(kombu_redis.SentinelChannel, name, None) is not getattr(kombu_redis.Channel, name)
    ]
    assert overridden == []
