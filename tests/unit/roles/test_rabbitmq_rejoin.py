"""When a RabbitMQ node restarts itself to join its cluster again (roles/celery_broker/files/rabbitmq_rejoin.py)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

REJOIN = Path(__file__).parents[3] / "roles" / "celery_broker" / "files" / "rabbitmq_rejoin.py"
spec = importlib.util.spec_from_file_location("rabbitmq_rejoin", REJOIN)
rabbitmq_rejoin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rabbitmq_rejoin)

NODES = ("rabbit@a", "rabbit@b", "rabbit@c")


def view(running=NODES, connected=NODES, partitioned=()) -> dict[str, set[str]]:
    return {
        "members": set(NODES),
        "running": set(running),
        "connected": set(connected),
        "partitioned": set(partitioned),
    }


def test_the_view_is_read_from_the_expressions_output_and_none_when_rabbitmq_does_not_run() -> None:
    output = (
        "members rabbit@a rabbit@b rabbit@c\nrunning rabbit@c\nconnected rabbit@c rabbit@a rabbit@b\n"
        "partitioned rabbit@a rabbit@b\nok\n"
    )
    assert rabbitmq_rejoin.parse_view(output) == view(running=["rabbit@c"], partitioned=["rabbit@a", "rabbit@b"])
    assert rabbitmq_rejoin.parse_view("members rabbit@a\nrunning rabbit@a\nconnected rabbit@a\npartitioned \nok\n") == {
        "members": {"rabbit@a"},
        "running": {"rabbit@a"},
        "connected": {"rabbit@a"},
        "partitioned": set(),
    }
    assert rabbitmq_rejoin.parse_view("stopped\nok\n") is None
    assert rabbitmq_rejoin.parse_view("") is None


@pytest.mark.parametrize(
    ("node_view", "apart"),
    [
        # Thawed after the others counted it down: alone, partitioned, connected to them all.
        (view(running=["rabbit@c"], partitioned=["rabbit@a", "rabbit@b"]), True),
        (view(running=["rabbit@c"], connected=["rabbit@c", "rabbit@a"], partitioned=["rabbit@a", "rabbit@b"]), True),
        # Healthy, or the majority's side with a partition recorded long ago.
        (view(), False),
        (view(partitioned=["rabbit@a"]), False),
        (view(running=["rabbit@b", "rabbit@c"], partitioned=["rabbit@a"]), False),
        # Really cut off: pause_minority's (it pauses the node, and starts it again).
        (view(running=["rabbit@c"], connected=["rabbit@c"], partitioned=["rabbit@a", "rabbit@b"]), False),
        # Alone with no partition recorded: a cluster starting, its other nodes not yet up.
        (view(running=["rabbit@c"]), False),
        (None, False),
    ],
)
def test_a_node_runs_apart_only_when_partitioned_from_most_of_its_cluster_while_connected_to_most(
    node_view, apart
) -> None:
    assert rabbitmq_rejoin.runs_apart(node_view) is apart


def test_the_node_restarts_only_when_it_runs_apart_at_both_looks(monkeypatch) -> None:
    members = "members rabbit@a rabbit@b rabbit@c\n"
    apart = members + "running rabbit@c\nconnected rabbit@a rabbit@b rabbit@c\npartitioned rabbit@a\n"
    together = members + "running rabbit@a rabbit@b rabbit@c\nconnected rabbit@a\npartitioned \n"
    commands = []

    def run(argv, **_kwargs):
        commands.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=outputs.pop(0) if argv[0].endswith("rabbitmqctl") else "")

    monkeypatch.setattr(rabbitmq_rejoin.subprocess, "run", run)
    monkeypatch.setattr(rabbitmq_rejoin.time, "sleep", lambda _seconds: None)

    outputs = [apart, together]
    assert rabbitmq_rejoin.main() == 0
    assert rabbitmq_rejoin.RESTART not in commands

    outputs = [apart, apart]
    assert rabbitmq_rejoin.main() == 0
    assert commands[-1] == rabbitmq_rejoin.RESTART
