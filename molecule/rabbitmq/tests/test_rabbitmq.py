"""The stack on RabbitMQ: consumer_timeout derived from the longest task, no guest, tasks complete,
and a task whose worker is SIGKILLed is redelivered at once."""

from __future__ import annotations

import json
import re
import shlex
import time

from conftest import call_task, journal, main_pid, send_tasks, starts_and_ends, task_events, wait_for

INSTANCES = ["default", "second"]
# examples/inventory/group_vars: the longest task (300 s) + the default margin (60 s).
EXPECTED_CONSUMER_TIMEOUT_MS = (300 + 0 + 60) * 1000
# A task whose worker dies is back on another consumer this fast (RabbitMQ requeues when the
# connection drops, docs/delivery.md); Redis would wait for its visibility timeout (minutes).
REDELIVERY_BOUND_SECONDS = 10

AMQP_LOGIN = """
import sys, amqp
try:
    amqp.Connection("127.0.0.1:5672", userid=sys.argv[1], password=sys.argv[2], virtual_host=sys.argv[3]).connect()
    print("accepted")
except amqp.exceptions.AccessRefused:
    print("refused")
"""


def test_consumer_timeout_is_derived_from_the_longest_task(host) -> None:
    value = host.check_output("rabbitmqctl eval 'application:get_env(rabbit, consumer_timeout).'")
    assert value == f"{{ok,{EXPECTED_CONSUMER_TIMEOUT_MS}}}"


def test_guest_cannot_log_in(host) -> None:
    users = host.check_output("rabbitmqctl list_users --quiet --formatter json")
    assert "guest" not in [user["user"] for user in json.loads(users)]
    for vhost in ("/", "celery"):
        argv = ["/opt/celery/current/bin/python", "-c", AMQP_LOGIN, "guest", "guest", vhost]
        login = host.check_output(shlex.join(argv))
        assert login == "refused", vhost


def test_tasks_complete_on_rabbitmq(host) -> None:
    assert call_task(host, "example.add", [20, 22])["result"] == 42
    nodes = {call_task(host, "example.whoami")["node"] for _ in range(6)}
    assert nodes <= {f"{name}@rc-rabbitmq" for name in INSTANCES}


def events_of(host, task_id: str) -> dict[str, list[dict]]:
    return starts_and_ends([e for name in INSTANCES for e in task_events(host, name)], [task_id])[task_id]


def test_a_task_whose_worker_is_sigkilled_is_redelivered_promptly(host) -> None:
    [task_id] = send_tasks(host, [("example.sleep", [8], "celery")])
    first_start = wait_for(lambda: events_of(host, task_id)["start"], 60, "the task to start")[0]
    unit = unit_of(host, first_start["pid"])
    killed_pid = main_pid(host, unit)
    killed_at = time.time()
    host.check_output(f"kill -KILL {killed_pid}")

    def started_again() -> list[dict] | None:
        starts = events_of(host, task_id)["start"]
        return starts if len(starts) >= 2 else None

    starts = wait_for(started_again, 60, "the task to start again")
    redelivered_after = starts[1]["t"] - killed_at
    assert redelivered_after < REDELIVERY_BOUND_SECONDS, f"redelivered {redelivered_after:.1f} s after the SIGKILL"
    ends = wait_for(lambda: events_of(host, task_id)["end"], 60, "the redelivered task to end")
    assert [end["state"] for end in ends] == ["SUCCESS"], ends
    # systemd brings the killed worker back (Restart=always).
    wait_for(lambda: main_pid(host, unit) not in (0, killed_pid), 60, f"{unit} to be restarted")
    assert host.service(unit).is_running, journal(host, unit)


def unit_of(host, pool_pid: int) -> str:
    """The worker unit (an instance's slot) whose cgroup holds the pool process that started the task."""
    cgroup = host.check_output(f"cat /proc/{pool_pid}/cgroup")
    return re.search(r"celery-worker(?:-b)?@[\w-]+\.service", cgroup).group(0)
