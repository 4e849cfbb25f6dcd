"""The stack on RabbitMQ: consumer_timeout derived from the longest task, no guest, tasks complete,
a task whose worker is SIGKILLed is redelivered at once, and no delivery limit drops a task. Runs
after the chaos suite (file order), on the fleet it leaves."""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest
from conftest import (
    call_task,
    current_node,
    current_unit,
    journal,
    main_pid,
    readiness,
    scenario_host,
    send_tasks,
    starts_and_ends,
    task_events,
    wait_for,
)
from test_chaos import BROKER, INSTANCE, LONGEST_TASK_TIMEOUT, WORKERS

# The span Redis's visibility timeout gets, longest task + margin (no ETA), in milliseconds.
EXPECTED_CONSUMER_TIMEOUT_MS = LONGEST_TASK_TIMEOUT * 1000
# A task whose worker dies is back on another consumer this fast (RabbitMQ requeues when the
# connection drops, docs/delivery.md); Redis would wait for its visibility timeout (minutes).
REDELIVERY_BOUND_SECONDS = 10

AMQP_LOGIN = """
import sys, amqp
try:
    amqp.Connection(sys.argv[4], userid=sys.argv[1], password=sys.argv[2], virtual_host=sys.argv[3]).connect()
    print("accepted")
except amqp.exceptions.AccessRefused:
    print("refused")
"""

# A quorum queue's message returned (its consumer's channel closed, as when a worker dies) more
# times than RabbitMQ 4's default delivery limit (20), then looked for.
QUORUM_RETURNS = """
import sys, time, amqp
RETURNS = 25
conn = amqp.Connection(sys.argv[1], userid="celery", password=sys.stdin.read(), virtual_host="celery")
conn.connect()
channel = conn.channel()
queue = "rc-test-quorum"
channel.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
channel.basic_publish(amqp.Message("task"), routing_key=queue)

def get(no_ack):
    deadline = time.monotonic() + 5
    while (message := channel.basic_get(queue, no_ack=no_ack)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return message

returned = 0
while returned < RETURNS and get(no_ack=False) is not None:
    channel.close()
    channel = conn.channel()
    returned += 1
kept = get(no_ack=True) is not None
channel.queue_delete(queue)
print(returned, "kept" if kept else "dropped")
"""
BROKER_PASSWORD = "Demo-Broker-Secret-4b1e93a7"  # noqa: S105 - examples/inventory's demo password
# Where the workers reach the broker (the hosts share a network; examples/inventory's URLs).
BROKER_ADDRESS = f"{BROKER}:5672"


@pytest.fixture(scope="module")
def broker():
    return scenario_host(BROKER)


@pytest.fixture(scope="module")
def workers() -> dict:
    return {name: scenario_host(name) for name in WORKERS}


def amqp_login(worker, user: str, password: str, vhost: str = "celery") -> str:
    """Whether RabbitMQ accepts the login from a worker host, with the amqp library Celery uses."""
    argv = ["/opt/celery/current/bin/python", "-c", AMQP_LOGIN, user, password, vhost, BROKER_ADDRESS]
    return worker.check_output(shlex.join(argv))


def test_consumer_timeout_is_derived_from_the_longest_task(broker) -> None:
    value = broker.check_output("rabbitmqctl eval 'application:get_env(rabbit, consumer_timeout).'")
    assert value == f"{{ok,{EXPECTED_CONSUMER_TIMEOUT_MS}}}"


def test_guest_cannot_log_in(broker, workers) -> None:
    users = broker.check_output("rabbitmqctl list_users --quiet --formatter json")
    assert "guest" not in [user["user"] for user in json.loads(users)]
    for vhost in ("/", "celery"):
        assert amqp_login(workers[WORKERS[0]], "guest", "guest", vhost) == "refused", vhost


def test_a_quorum_queue_never_drops_a_task_returned_many_times(workers) -> None:
    """RabbitMQ 4 would drop it after 20 returns (its default delivery-limit); the role sets none."""
    program = shlex.join(["/opt/celery/current/bin/python", "-c", QUORUM_RETURNS, BROKER_ADDRESS])
    assert workers[WORKERS[0]].check_output(f"printf %s {BROKER_PASSWORD} | {program}") == "25 kept"


def test_tasks_complete_on_rabbitmq(workers) -> None:
    sender = workers[WORKERS[0]]
    assert call_task(sender, "example.add", [20, 22])["result"] == 42
    nodes = {call_task(sender, "example.whoami")["node"] for _ in range(6)}
    assert nodes <= {current_node(worker, INSTANCE) for worker in workers.values()}


def events_of(workers: dict, task_id: str) -> dict[str, list[dict]]:
    events = [event for worker in workers.values() for event in task_events(worker)]
    return starts_and_ends(events, [task_id])[task_id]


def test_a_task_whose_worker_is_sigkilled_is_redelivered_promptly(workers) -> None:
    [task_id] = send_tasks(workers[WORKERS[0]], [("example.sleep", [8], "celery")])
    first_start = wait_for(lambda: events_of(workers, task_id)["start"], 60, "the task to start")[0]
    host = workers[first_start["hostname"]]
    unit = unit_of(host, first_start["pid"])
    killed_pid = main_pid(host, unit)
    killed_at = time.time()
    host.check_output(f"kill -KILL {killed_pid}")

    def started_again() -> list[dict] | None:
        starts = events_of(workers, task_id)["start"]
        return starts if len(starts) >= 2 else None

    starts = wait_for(started_again, 60, "the task to start again")
    redelivered_after = starts[1]["t"] - killed_at
    assert redelivered_after < REDELIVERY_BOUND_SECONDS, f"redelivered {redelivered_after:.1f} s after the SIGKILL"
    ends = wait_for(lambda: events_of(workers, task_id)["end"], 60, "the redelivered task to end")
    assert [end["state"] for end in ends] == ["SUCCESS"], ends
    # systemd brings the killed worker back (Restart=always).
    wait_for(lambda: main_pid(host, unit) not in (0, killed_pid), 60, f"{unit} to be restarted")
    assert host.service(unit).is_running, journal(host, unit)


def unit_of(host, pool_pid: int) -> str:
    """The worker unit (an instance's slot) whose cgroup holds the pool process that started the task."""
    cgroup = host.check_output(f"cat /proc/{pool_pid}/cgroup")
    return re.search(r"celery-worker(?:-b)?@[\w-]+\.service", cgroup).group(0)


def test_a_broker_restart_with_tasks_running_does_not_trip_the_watchdog(broker, workers) -> None:
    """At a connection loss Celery cancels the running tasks and marks each for retry through the
    lost broker (rpc:// results), seconds each, before it stops its consumer: the watchdog must count
    that as reconnecting. The shortest watchdog allowed (10 s) restarted the workers before."""
    units = {name: current_unit(host, INSTANCE) for name, host in workers.items()}
    for name, host in workers.items():
        drop_ins = f"/run/systemd/system/{units[name]}.d"
        host.check_output(
            f"mkdir -p {drop_ins} && printf '[Service]\\nWatchdogSec=10\\n' > {drop_ins}/watchdog.conf"
            f" && systemctl daemon-reload && systemctl restart {units[name]}"
        )
    try:
        for name, host in workers.items():
            wait_for(lambda host=host: readiness(host, INSTANCE), 60, f"{units[name]} ready")
        pids = {name: main_pid(host, units[name]) for name, host in workers.items()}
        task_ids = send_tasks(workers[WORKERS[0]], [("example.sleep", [15], "celery")] * 6)
        wait_for(lambda: sum(bool(events_of(workers, t)["start"]) for t in task_ids) == 6, 60, "6 tasks running")
        since = broker.check_output("date +%s")
        broker.check_output("systemctl restart rabbitmq-server.service")
        wait_for(lambda: all(events_of(workers, t)["end"] for t in task_ids), 180, "the tasks to end after the restart")
        for name, host in workers.items():
            aborts = host.check_output(f"journalctl -u {units[name]} --since @{since}").count("Watchdog timeout")
            assert (aborts, main_pid(host, units[name])) == (0, pids[name]), journal(host, units[name], 80)
    finally:
        for name, host in workers.items():
            host.run(f"rm -rf /run/systemd/system/{units[name]}.d && systemctl daemon-reload")
            host.run(f"systemctl restart {units[name]}")
