"""Redis with Sentinel on three hosts (Valkey on Debian 13: CHAOS_BROKER) loses its primary while a producer
publishes HA_TASKS short tasks: its server SIGKILLed, its host stopped, frozen 60 s (docker pause) or cut off the
network (docker network disconnect). The sentinels promote a replica; the worker consumes again within RESUME_BOUND
s, and every task the broker acknowledged runs. The figures go to .cache/molecule-logs/HA.txt (and as JSON lines to
HA_RECORD, if set: benchmarks/ha.py); HA_FAULTS (comma-separated) picks the faults."""

from __future__ import annotations

import os

import pytest
from conftest import scenario_host, service_memory_mib, wait_for
from ha_faults import TASKS, publish_through_a_fault, record, recover_host, strike_host

PREFIX = f"rc-{os.environ['MOLECULE_SCENARIO_NAME']}"
BROKERS = [f"{PREFIX}-broker{n}" for n in (1, 2, 3)]
WORKER = f"{PREFIX}-worker1"
NETWORK = PREFIX
MASTER = "celery"
# redis or valkey: Debian names the server's packages, files, commands and services after it.
SERVER = os.environ["CHAOS_BROKER"]
SENTINEL_USER = "celery-broker-sentinel"
FAULTS = os.environ.get("HA_FAULTS", "kill:primary,stop:primary,freeze:primary,disconnect:primary").split(",")
# The bound for Sentinel: consumption resumes within 30 s of losing the primary.
RESUME_BOUND = 30


def sentinel(host, *command: str) -> list[str]:
    """A command to the host's sentinel as the sentinels' own user (its password read on the host, over stdin)."""
    script = (
        f"printf 'AUTH {SENTINEL_USER} %s\\n{' '.join(command)}\\n' "
        f'"$(awk \'$2 == "sentinel-pass" {{print $3}}\' /etc/{SERVER}/sentinel.conf)" | {SERVER}-cli -p 26379'
    )
    result = host.run(script)
    lines = result.stdout.splitlines()
    return lines[1:] if result.rc == 0 and lines[:1] == ["OK"] else []


def address(host) -> str:
    return host.check_output("hostname -I").split()[0]


def primary(brokers: dict) -> str:
    """The host the sentinels' majority names as the primary, else ''."""
    addresses = {address(host): name for name, host in brokers.items()}
    named = [sentinel(host, "SENTINEL", "get-master-addr-by-name", MASTER)[:1] for host in brokers.values()]
    votes = [addresses.get(answer[0], "") for answer in named if answer]
    winner = max(set(votes), key=votes.count, default="")
    return winner if votes.count(winner) * 2 > len(brokers) else ""


def whole(brokers: dict) -> bool:
    """Whether every sentinel agrees on the primary, which has every other host as a replica that is up, and acts: a
    sentinel that was frozen stays in TILT mode 30 s after, and neither votes nor counts the primary down. Struck
    then, a primary waited 18 s for a quorum (docs/delivery.md)."""
    current = primary(brokers)
    if not current:
        return False
    for host in brokers.values():
        if "sentinel_tilt:0" not in [line.strip() for line in sentinel(host, "INFO", "sentinel")]:
            return False
        master = sentinel(host, "SENTINEL", "MASTER", MASTER)
        fields = dict(zip(master[::2], master[1::2], strict=False))
        if fields.get("flags") != "master" or fields.get("num-other-sentinels") != str(len(brokers) - 1):
            return False
        replicas = sentinel(host, "SENTINEL", "REPLICAS", MASTER)
        flags = [value for name, value in zip(replicas, replicas[1:], strict=False) if name == "flags"]
        if flags != ["slave"] * (len(brokers) - 1):
            return False
    return True


def strike(kind: str, node: str, brokers: dict) -> float:
    if kind == "kill":
        return float(brokers[node].check_output(f"pkill -KILL -x {SERVER}-server; date +%s.%N"))
    return strike_host(kind, node, NETWORK)


def recover(kind: str, node: str, brokers: dict) -> None:
    recover_host(kind, node, NETWORK)
    # systemd restarts a SIGKILLed Redis (Restart=always); a stopped host boots it. The sentinels make the old
    # primary a replica of the new one.
    wait_for(lambda: brokers[node].run(f"systemctl is-active {SERVER}-server.service").rc == 0, 180, f"{node} up")
    wait_for(lambda: whole(brokers), 180, "the sentinels agreeing on a primary with both other hosts as replicas")


@pytest.mark.parametrize("fault", FAULTS)
def test_losing_the_primary_loses_no_acknowledged_task(fault: str) -> None:
    kind, _target = fault.split(":")
    brokers = {name: scenario_host(name) for name in BROKERS}
    worker = scenario_host(WORKER)
    wait_for(lambda: whole(brokers), 180, "the sentinels agreeing on a primary with both other hosts as replicas")
    node = primary(brokers)
    figures = publish_through_a_fault(
        worker, lambda: strike(kind, node, brokers), lambda: recover(kind, node, brokers), count=TASKS, avoid=node
    )
    after = primary(brokers)
    memory = [round(service_memory_mib(host, f"{SERVER}-server.service")) for host in brokers.values()]
    record(
        f"{SERVER} with sentinel, {kind} of the primary {node} (primary after it: {after}): "
        f"{figures['published']} tasks acknowledged, {figures['lost']} lost, {figures['ran_twice']} ran twice, "
        f"{figures['retries']} publishes retried, longest consumption gap {figures['gap']:.2f} s, "
        f"longest publish gap {figures['publish_gap']:.2f} s; each host's {SERVER} after it: "
        + ", ".join(f"{mib} MiB" for mib in memory),
        {"fault": fault, "node": node, "primary_after": after, **figures, "redis_mib": memory},
    )
    assert not figures["lost"], figures
    assert figures["gap"] <= RESUME_BOUND, (fault, node, figures)
