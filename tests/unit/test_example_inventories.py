"""examples/inventory-ha is examples/inventory made a RabbitMQ cluster: every host's broker type is
rabbitmq, every client lists the three nodes, and only the broker hosts hold the Erlang cookie."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).parents[2]
SHOWN = (
    "{{ {'type': celery_broker_type, 'url': example_broker_url,"
    " 'cookie': celery_broker_rabbitmq_erlang_cookie | default('')} }}"
)


def resolved(inventory: str) -> dict[str, dict]:
    """Each host's broker type, broker URL and Erlang cookie, as Ansible resolves them."""
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
