#!/usr/bin/python3
"""Restarts this RabbitMQ node when it runs apart from its cluster although it reaches most of it.

pause_minority pauses a node that sees most of its cluster go down, and starts it again once they
are back. A node that was frozen (a suspended VM, a live migration, `docker pause`) sees nothing go
down: the others counted it down while it was frozen, and when it runs again Mnesia records a
partition that nothing heals. The node keeps running with itself alone as its running nodes, the
others leave it out (`rabbitmq-upgrade await_online_quorum_plus_one` waits for it in vain), until it
restarts; at its restart it joins the others again. RabbitMQ's partitions guide: pause_minority
"will do nothing to defend against partitions caused by cluster nodes being suspended".

Run by reliable-celery-rabbitmq-rejoin.timer. It restarts the node only when, at two looks
LOOK_AGAIN_SECONDS apart, RabbitMQ runs on it, a partition is recorded, at most half of the
cluster's members count as running, and yet the node is connected to more than half of them: a
node cut off by a real partition is paused by pause_minority instead, and is left to it.
"""

from __future__ import annotations

import subprocess
import sys
import time

LOOK_AGAIN_SECONDS = 5
RESTART = ["/usr/bin/systemctl", "restart", "rabbitmq-server.service"]
# One `rabbitmqctl eval`: an Erlang VM for the CLI costs about 0.4 s of CPU, so one call per look. Running: Mnesia's
# view, as `rabbitmqctl cluster_status` shows it; RabbitMQ 4.0's rabbit_nodes:all_running() counts every connected
# node whose RabbitMQ runs, the node apart included (Debian 13, 2026-12-07: the cluster stayed apart 180 s and more).
VIEW_EXPRESSION = """
Names = fun(Nodes) -> string:join([atom_to_list(Node) || Node <- Nodes], " ") end,
case rabbit:is_running() of
    true ->
        io:format("members ~s~nrunning ~s~nconnected ~s~npartitioned ~s~n",
                  [Names(rabbit_nodes:all()), Names(mnesia:system_info(running_db_nodes)),
                   Names([node() | nodes()]), Names(rabbit_node_monitor:partitions())]);
    false ->
        io:format("stopped~n")
end.
"""
VIEW_KEYS = ("members", "running", "connected", "partitioned")


def parse_view(output: str) -> dict[str, set[str]] | None:
    """The node's view from VIEW_EXPRESSION's output, or None when RabbitMQ does not run on it."""
    view = {}
    for line in output.splitlines():
        key, _, names = line.partition(" ")
        if key in VIEW_KEYS:
            view[key] = set(names.split())
    if set(view) != set(VIEW_KEYS):
        return None
    return view


def runs_apart(view: dict[str, set[str]] | None) -> bool:
    """Whether the node runs apart from a cluster it is connected to (see the module's docstring)."""
    if view is None or not view["partitioned"]:
        return False
    members = view["members"]

    def most(nodes: set[str]) -> bool:
        return 2 * len(members & nodes) > len(members)

    return not most(view["running"]) and most(view["connected"])


def look() -> dict[str, set[str]] | None:
    # As the rabbitmq user, with its cookie, as Debian's /usr/sbin/rabbitmqctl does, but without su, whose
    # PAM session would log four lines at every look.
    result = subprocess.run(  # noqa: S603
        ["/usr/lib/rabbitmq/bin/rabbitmqctl", "--quiet", "eval", VIEW_EXPRESSION],
        user="rabbitmq",
        group="rabbitmq",
        env={"HOME": "/var/lib/rabbitmq", "PATH": "/usr/bin:/bin"},
        cwd="/var/lib/rabbitmq",
        capture_output=True,
        text=True,
        check=False,
    )
    return parse_view(result.stdout) if result.returncode == 0 else None


def main() -> int:
    view = look()
    if not runs_apart(view):
        return 0
    time.sleep(LOOK_AGAIN_SECONDS)
    view = look()
    if not runs_apart(view):
        return 0
    # <4>: journald logs the line as a warning (sd-daemon(3)), past the unit's LogLevelMax=notice.
    print(
        f"<4>RabbitMQ runs apart from its cluster: running {' '.join(sorted(view['running']))} of"
        f" {' '.join(sorted(view['members']))}, partitioned from {' '.join(sorted(view['partitioned']))},"
        f" connected to {' '.join(sorted(view['connected']))}; restarting it to join the others again",
        file=sys.stderr,
    )
    return subprocess.run(RESTART, check=False).returncode  # noqa: S603


if __name__ == "__main__":
    sys.exit(main())
