"""examples/inventory-ha is examples/inventory made a RabbitMQ cluster: every host's broker type is
rabbitmq, every client lists the three nodes, and only the broker hosts hold the Erlang cookie.
examples/inventory-sentinel makes it three Redis hosts with Sentinel: every client lists the three
sentinels, and only the broker hosts hold the Sentinel password."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).parents[2]
SHOWN = (
    "{{ {'type': celery_broker_type,"
    " 'url': example_broker_url if example_broker_user is defined or celery_broker_type == 'rabbitmq' else none,"
    " 'cookie': celery_broker_rabbitmq_erlang_cookie | default(''),"
    " 'sentinel_password': celery_broker_redis_sentinel_password | default('')} }}"
)


def resolved(inventory: str) -> dict[str, dict]:
    """Each host's broker type, broker URL (a client's), Erlang cookie and Sentinel password, as Ansible resolves
    them."""
    command = [shutil.which("ansible") or "ansible", "-i", str(REPO_ROOT / "examples" / inventory), "all"]
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [*command, "-m", "ansible.builtin.debug", "-a", f"msg={SHOWN}", "--one-line"],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.minimal",
             "RELIABLE_CELERY_EXAMPLE_WHEELHOUSE": "/wheelhouse"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    hosts = {}
    for line in result.stdout.splitlines():
        host, answer = line.split(" | SUCCESS => ", 1)
        hosts[host] = json.loads(answer)["msg"]
    return hosts


def test_the_ha_inventory_is_the_demo_fleet_with_a_rabbitmq_cluster() -> None:
    hosts = resolved("inventory-ha")
    brokers = sorted(host for host in hosts if host.startswith("broker"))
    assert len(brokers) == 3
    nodes = ";".join(f"amqp://celery:Demo-Broker-Secret-4b1e93a7@{broker}:5672/celery" for broker in brokers)
    for host, shown in hosts.items():
        assert shown["type"] == "rabbitmq", host
        assert shown["url"] == nodes, host
        assert bool(shown["cookie"]) == (host in brokers), host


def test_the_demo_inventory_stays_a_single_redis() -> None:
    assert {shown["type"] for shown in resolved("inventory").values()} == {"redis"}


def test_the_sentinel_inventory_is_the_demo_fleet_with_three_redis_hosts_and_sentinels() -> None:
    hosts = resolved("inventory-sentinel")
    brokers = sorted(host for host in hosts if host.startswith("broker"))
    assert len(brokers) == 3
    for host, shown in hosts.items():
        assert shown["type"] == "redis", host
        assert bool(shown["sentinel_password"]) == (host in brokers), host
        if shown["url"] is None:  # a broker host without a client
            continue
        urls = shown["url"].split(";")
        assert [url.split("@", 1)[1] for url in urls] == [f"{broker}:26379/0" for broker in brokers], host
        assert all(url.startswith("sentinel://") for url in urls), host
    assert hosts["worker1.example.internal"]["url"].startswith("sentinel://worker:")
    assert hosts["beat.example.internal"]["url"].startswith("sentinel://beat:")


def test_the_demo_inventory_keeps_its_redis_url() -> None:
    shown = resolved("inventory")["rc-demo-worker1"]
    assert shown["url"] == "redis://worker:Demo%2FWorker%23Secret%3F4b1e%4093a7%2540@rc-demo-broker:6379/0"
