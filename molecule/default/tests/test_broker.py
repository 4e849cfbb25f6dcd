"""The celery_broker role's Redis (installed in prepare): password, AOF, no eviction, no loss."""

from __future__ import annotations

import pytest
from conftest import (
    current_unit,
    recap,
    run_playbook,
    send_tasks,
    shared_playbook,
    task_results,
    unit_properties,
    wait_for,
)

PASSWORD = "Broker-Secret-7f3a-0d2c9e"  # noqa: S105 - the test broker's password


def redis(host, *args: str, password: str | None = PASSWORD):
    auth = f"REDISCLI_AUTH={password} " if password else ""
    return host.run(f"{auth}redis-cli --no-auth-warning -h 127.0.0.1 {' '.join(args)}")


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
    assert redis(host, "config", "get", setting).stdout.split() == [setting, value]


def test_redis_configuration_is_not_world_readable(host) -> None:
    config = host.file("/etc/redis/redis.conf")
    assert (config.user, config.group, config.mode) == ("redis", "redis", 0o640)
    assert PASSWORD not in host.check_output("ps -eo args --no-headers")


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
