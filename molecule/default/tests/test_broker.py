"""The celery_broker role's Redis (installed in prepare, with the legacy celery_broker_password):
password, ACL, AOF, no eviction, no loss."""

from __future__ import annotations

import pytest
from conftest import (
    REDIS_ADMIN_SECRET,
    current_unit,
    recap,
    redis_cli,
    run_playbook,
    send_tasks,
    shared_playbook,
    task_results,
    unit_properties,
    wait_for,
)

PASSWORD = "Broker-Secret-7f3a-0d2c9e"  # noqa: S105 - the test broker's password


def redis(host, *args: str, password: str | None = PASSWORD):
    """As a worker would: the default user with the broker password (None: no login)."""
    return redis_cli(host, *args, user=None if password is None else "default", password=password)


def test_redis_refuses_clients_without_the_password(host) -> None:
    assert "NOAUTH" in redis(host, "ping", password=None).stdout
    wrong = redis(host, "ping", password="not-the-password")  # noqa: S106 - a wrong one
    assert "WRONGPASS" in wrong.stderr
    assert "NOAUTH" in wrong.stdout
    assert redis(host, "ping").stdout.strip() == "PONG"


@pytest.mark.parametrize(
    ("setting", "value"),
    [("appendonly", "yes"), ("appendfsync", "everysec"), ("maxmemory-policy", "noeviction"), ("bind", "127.0.0.1")],
)
def test_redis_runs_with_the_reliable_settings(host, setting: str, value: str) -> None:
    assert redis_cli(host, "config", "get", setting).stdout.split() == [setting, value]


def test_redis_configuration_is_not_world_readable_and_holds_no_password(host) -> None:
    for path in ("/etc/redis/redis.conf", "/etc/redis/users.acl"):
        config = host.file(path)
        assert (config.user, config.group, config.mode) == ("redis", "redis", 0o640)
        assert PASSWORD not in config.content_string
    secret = host.file(REDIS_ADMIN_SECRET)
    assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600)
    assert PASSWORD not in host.check_output("ps -eo args --no-headers")


@pytest.mark.parametrize(
    "command", ["config set appendonly no", "config get requirepass", "flushall", "shutdown nosave", "debug sleep 0"]
)
def test_the_legacy_password_cannot_administer_redis(host, command: str) -> None:
    """celery_broker_password alone makes the default user a worker: no administration commands."""
    # Redis refuses DEBUG to everyone (enable-debug-command no) before it checks the ACL: ask the ACL.
    dry_run = redis_cli(host, "acl", "dryrun", "default", *command.split()).stdout
    assert f"no permissions to run the '{command.split(maxsplit=1)[0]}" in dry_run, dry_run
    answer = redis(host, *command.split())
    assert "NOPERM" in answer.stdout + answer.stderr or command.startswith("debug"), answer.stdout + answer.stderr
    assert redis(host, "ping").stdout.strip() == "PONG"


def test_a_broker_restart_loses_no_queued_task(host) -> None:
    worker = current_unit(host, "default")
    host.check_output(f"systemctl stop {worker}")
    try:
        task_ids = send_tasks(host, [("example.add", [n, n], "") for n in range(25)])
        assert int(redis(host, "-n", "0", "llen", "celery").stdout) == 25
        host.check_output("systemctl restart redis-server.service")
        wait_for(lambda: redis(host, "ping").stdout.strip() == "PONG", 30, "Redis back")
        assert int(redis(host, "-n", "0", "llen", "celery").stdout) == 25
    finally:
        host.check_output(f"systemctl start {worker}")
    results = task_results(host, task_ids, timeout=60)
    assert [result["result"] for result in results] == [2 * n for n in range(25)]
    assert unit_properties(host, "redis-server.service", "ActiveState")["ActiveState"] == "active"


def test_broker_role_reruns_change_nothing(host) -> None:
    result = run_playbook(shared_playbook("prepare-broker.yml"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert PASSWORD not in result.stdout + result.stderr
    assert recap(result, host.backend.get_hostname())["changed"] == 0, result.stdout[-3000:]
