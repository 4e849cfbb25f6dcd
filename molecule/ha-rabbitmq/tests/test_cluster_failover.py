"""A RabbitMQ cluster of three nodes loses the leader of the workers' quorum queue while a producer
publishes HA_TASKS short tasks with publisher confirms: its broker process SIGKILLed, its host
stopped, frozen 60 s (docker pause) or cut off the network (docker network disconnect); or a
changed setting restarts every node (reconfigure: the deploy again, with another consumer_timeout).
Every task the cluster confirmed runs (0 lost), and the worker consumes again within RESUME_BOUND s.
The figures go to .cache/molecule-logs/HA.txt (and as JSON lines to HA_RECORD, if set: benchmarks/ha.py);
HA_FAULTS (comma-separated) picks the faults."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import current_unit, run_playbook, scenario_file, scenario_host, service_memory_mib, wait_for
from ha_faults import INSTANCE, TASKS, publish_through_a_fault, record, recover_host, strike_host

PREFIX = f"rc-{os.environ['MOLECULE_SCENARIO_NAME']}"
BROKERS = [f"{PREFIX}-broker{n}" for n in (1, 2, 3)]
WORKER = f"{PREFIX}-worker1"
NETWORK = PREFIX
VHOST = "celery"
QUEUE = "celery"
# FAULT:TARGET: the leader of the celery queue, or the node the worker consumes through (the worst case when it
# is the leader too).
FAULTS = os.environ.get(
    "HA_FAULTS", "kill:leader,stop:leader,freeze:leader,disconnect:leader,freeze:consumer,reconfigure:cluster"
).split(",")
# The bound for a RabbitMQ cluster: consumption resumes within 10 s of losing a node.
RESUME_BOUND = 10
# A deploy that restarts every node does so one node at a time: publishing never stops for longer than a
# client's failover to another node (all at once: docs/delivery.md).
RECONFIGURE_PUBLISH_BOUND = 3


def rabbitmqctl_json(host, *args: str):
    result = host.run(" ".join(["rabbitmqctl", "-q", *args, "--formatter", "json"]))
    return json.loads(result.stdout) if result.rc == 0 and result.stdout.strip() else None


def queue_state(brokers) -> dict:
    """The celery queue's leader, members and online members, as the first node that answers sees them."""
    for host in brokers:
        queues = rabbitmqctl_json(host, "list_queues", "-p", VHOST, "name", "leader", "members", "online")
        if queues:
            return next((queue for queue in queues if queue["name"] == QUEUE), {})
    return {}


def consumer_node(worker) -> str:
    """The host of the node the worker consumes through: Celery logs each connection of its consumer."""
    lines = worker.run(f"journalctl -o cat -u {current_unit(worker, INSTANCE)} --grep 'Connected to amqp'").stdout
    connected = lines.strip().splitlines()
    return connected[-1].rsplit("@", 1)[1].split(":", 1)[0] if connected else ""


def healthy(brokers) -> bool:
    state = queue_state(brokers)
    return len(state.get("online", [])) == len(BROKERS)


def whole(brokers) -> bool:
    """Whether every node counts every node as running: a node that runs apart after a freeze does not
    (nor do the others count it), although its quorum queue members are online."""
    for host in brokers:
        status = rabbitmqctl_json(host, "cluster_status")
        if not status or len(status.get("running_nodes", [])) != len(BROKERS):
            return False
    return True


def strike(kind: str, node: str, brokers: dict) -> float:
    """Inject the fault into NODE, return when it struck; the node comes back in `recover`."""
    if kind == "kill":
        return float(brokers[node].check_output("pkill -KILL -x beam.smp; date +%s.%N"))
    if kind == "reconfigure":
        struck = time.time()
        # Another consumer_timeout each time, never below the workers' longest task (examples/inventory-ha: 300 s):
        # site.yml refuses a broker that does not outlast it (60 + time % 600 failed that two runs in five).
        changed = {"celery_broker_max_task_seconds": 301 + int(struck) % 600}
        result = run_playbook(scenario_file("converge.yml"), extra_vars=changed)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        return struck
    return strike_host(kind, node, NETWORK)


def recover(kind: str, node: str, brokers: dict) -> None:
    if kind != "reconfigure":
        recover_host(kind, node, NETWORK)
        # systemd restarts a SIGKILLed RabbitMQ (Restart=on-failure); a stopped host boots it.
        wait_for(lambda: brokers[node].run("systemctl is-active rabbitmq-server.service").rc == 0, 180, f"{node} up")
    wait_for(lambda: healthy(brokers.values()), 180, "every member of the quorum queue online")
    if kind != "reconfigure":
        wait_for(lambda: whole(brokers.values()), 180, "every node running with all the others")


@pytest.mark.parametrize("fault", FAULTS)
def test_losing_a_node_loses_no_confirmed_task(fault: str) -> None:
    kind, target = fault.split(":")
    brokers = {name: scenario_host(name) for name in BROKERS}
    worker = scenario_host(WORKER)
    wait_for(lambda: healthy(brokers.values()), 180, "every member of the quorum queue online")
    leader = queue_state(brokers.values())["leader"].split("@", 1)[1]
    consumer = wait_for(lambda: consumer_node(worker), 60, "the worker's consumer")
    node = {"leader": leader, "consumer": consumer}.get(target, target)
    # A deploy takes longer than TASKS take to publish: the publisher goes on until it has ended.
    figures = publish_through_a_fault(
        worker,
        lambda: strike(kind, node, brokers),
        lambda: recover(kind, node, brokers),
        count=TASKS * 4 if kind == "reconfigure" else TASKS,
        avoid=node,
    )
    memory = [round(service_memory_mib(broker, "rabbitmq-server.service")) for broker in brokers.values()]
    record(
        f"rabbitmq cluster, {kind} of {node} (the {target}; leader {leader}, worker's node {consumer}): "
        f"{figures['published']} tasks confirmed, {figures['lost']} lost, {figures['ran_twice']} ran twice, "
        f"{figures['retries']} publishes retried, longest consumption gap {figures['gap']:.2f} s, "
        f"longest publish gap {figures['publish_gap']:.2f} s; each node's RabbitMQ after it: "
        + ", ".join(f"{mib} MiB" for mib in memory),
        {"fault": fault, "node": node, "leader": leader, "consumer": consumer, **figures, "rabbitmq_mib": memory},
    )
    assert not figures["lost"]
    assert figures["gap"] <= RESUME_BOUND, (fault, node, leader, consumer, figures)
    if kind == "reconfigure":
        assert figures["publish_gap"] <= RECONFIGURE_PUBLISH_BOUND, (fault, figures)
