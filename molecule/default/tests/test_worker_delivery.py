"""The running workers apply the reliable-delivery profile and run real tasks from the broker."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import call_task, celery, current_node, current_unit, in_worker_environment, journal

# (instance, app pattern): "default" runs the Django-pattern app (config_from_object), "reports"
# the app that sets its own settings with conf.update; both set the unsafe values on purpose.
INSTANCES = ["default", "reports"]
# The broker's: celery_worker_redis_lease_seconds (leases on); the result backend's:
# celery_worker_max_task_seconds 240 + max ETA 0 + margin 60.
LEASE_SECONDS, VISIBILITY_TIMEOUT = 60, 300


@pytest.fixture(scope="module")
def hostname(host) -> str:
    return host.check_output("hostname")


def inspect(host, instance: str, hostname: str, command: str) -> object:
    node = current_node(host, instance)
    result = celery(host, instance, "inspect", command, "-d", node, "--json", "--timeout", "10")
    assert result.rc == 0, f"{result.stdout}\n{result.stderr}\n{journal(host, current_unit(host, instance))}"
    return json.loads(result.stdout)[node]


@pytest.mark.parametrize("instance", INSTANCES)
def test_running_worker_reports_the_reliable_delivery_settings(host, hostname: str, instance: str) -> None:
    conf = inspect(host, instance, hostname, "conf")
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert conf["worker_direct"] is True  # the canaries go through the node's own queue
    assert conf["broker_transport_options"] == {
        "visibility_timeout": LEASE_SECONDS,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 5,
    }
    assert conf["result_backend_transport_options"] == {"visibility_timeout": VISIBILITY_TIMEOUT}
    wrapper_entries = {"reliable_celery_leases", "reliable_celery_poison", "reliable_celery_start_canary"}
    assert not wrapper_entries & set(conf), "the wrapper's own entries reached Celery's settings"


@pytest.mark.parametrize(("instance", "queue"), [("default", "celery"), ("reports", "reports")])
def test_role_settings_win_over_the_apps_own(host, hostname: str, instance: str, queue: str) -> None:
    """Both apps set acks_late off and prefetch 4; the worker resolves the role's values."""
    effective = call_task(host, "example.effective_settings", queue=queue)
    assert effective == {
        "acks_late": True,
        "reject_on_worker_lost": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # The app's other settings still apply: the wrapper overrides, it does not replace.
        "task_track_started": True,
        "node": current_node(host, instance),
    }


@pytest.mark.parametrize(("instance", "concurrency"), [("default", 2), ("reports", 1)])
def test_consumer_prefetches_one_message_per_process(host, hostname: str, instance: str, concurrency: int) -> None:
    stats = inspect(host, instance, hostname, "stats")
    assert stats["prefetch_count"] == concurrency
    assert stats["pool"]["max-concurrency"] == concurrency


@pytest.mark.parametrize(("instance", "queues"), [("default", {"celery"}), ("reports", {"reports", "slow"})])
def test_each_instance_consumes_only_its_own_queues(host, hostname: str, instance: str, queues: set[str]) -> None:
    """And its node's own queue (worker_direct), through which the start canary and the watchdog's go."""
    active = inspect(host, instance, hostname, "active_queues")
    assert {queue["name"] for queue in active} == {*queues, f"{current_node(host, instance)}.dq2"}


def test_quick_task_round_trip(host) -> None:
    assert call_task(host, "example.add", [2, 3])["result"] == 5


@pytest.mark.parametrize(("queue", "instance"), [("celery", "default"), ("reports", "reports"), ("slow", "reports")])
def test_tasks_run_on_the_instance_of_their_queue(host, hostname: str, queue: str, instance: str) -> None:
    ran = call_task(host, "example.whoami", queue=queue)
    assert ran["node"] == current_node(host, instance)
    assert ran["queue"] == queue


def test_long_task_with_arguments(host) -> None:
    assert call_task(host, "example.sleep", [1.5], queue="slow")["slept"] >= 1.5


def test_failing_task_reports_its_error_and_the_worker_keeps_running(host) -> None:
    result = host.run(
        in_worker_environment(
            "default",
            [
                "/opt/celery/current/bin/python",
                "-c",
                'from reliable_celery_app import app; app.send_task("example.fail", args=["boom-42"]).get(timeout=60)',
            ],
        )
    )
    assert result.rc != 0
    assert "RuntimeError: boom-42" in result.stderr
    assert call_task(host, "example.add", [1, 1])["result"] == 2


def test_environment_values_reach_the_worker_unchanged(host) -> None:
    """Quotes, backslashes and dollars in celery_worker_environment survive the environment file."""
    expected = 'tok-"quoted"-\\back-$HOME-App-Token-51d0c7'
    digest = call_task(host, "example.environment_digest", ["EXAMPLE_API_TOKEN"])
    assert digest == hashlib.sha256(expected.encode()).hexdigest()


def test_instance_environment_reaches_only_its_instance(host) -> None:
    assert call_task(host, "example.environment_digest", ["REPORTS_ONLY"], queue="reports") is not None
    assert call_task(host, "example.environment_digest", ["REPORTS_ONLY"], queue="celery") is None
