#!/usr/bin/env python3
"""Benchmark: a broker of three hosts losing one under load, as a markdown report (asserts nothing).

Creates a scenario's hosts (--scenario ha-rabbitmq: three broker hosts forming one RabbitMQ cluster; ha-redis:
three Redis hosts with Sentinel; and a worker host), converges them with playbooks/site.yml, runs the scenario's
failover test with --tasks tasks for each of its faults (molecule/SCENARIO/tests/) and destroys the hosts. Per
fault the report gives the tasks published, lost and run twice, the worker's longest consumption gap, the
publisher's longest gap and what each broker host's server holds in memory after it. The test's bounds stay
its assertions: a fault that breaks one is reported with its figures, not left out.

    make benchmark PARTS=ha
    python benchmarks/ha.py --tasks 1000 --output /tmp/ha.md
    python benchmarks/ha.py --scenario ha-redis --output /tmp/ha-redis.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from stack import report_heading

REPO = Path(__file__).resolve().parents[1]
# Each scenario's test's HA_FAULTS, all of them, in its words; what its hosts are and their server.
SCENARIOS = {
    "ha-rabbitmq": {
        "faults": {
            "kill:leader": "SIGKILL of the leader's `beam.smp`",
            "stop:leader": "`docker stop` of the leader, back after 20 s",
            "freeze:leader": "`docker pause` of the leader for 60 s",
            "disconnect:leader": "`docker network disconnect` of the leader for 20 s",
            "freeze:consumer": "`docker pause` of the worker's node for 60 s",
            "reconfigure:cluster": "a deploy that restarts every node, one at a time",
        },
        "title": "A RabbitMQ cluster losing a node",
        "hosts": "three broker hosts forming one RabbitMQ cluster and a worker host, molecule/ha-rabbitmq",
        "publish": "with publisher confirms, through the nodes but the struck one",
        "server": "RabbitMQ",
        "bound": 10,
    },
    "ha-redis": {
        "faults": {
            "stop:primary": "`docker stop` of the primary, back after 20 s",
            "freeze:primary": "`docker pause` of the primary for 60 s",
            "disconnect:primary": "`docker network disconnect` of the primary for 20 s",
            "kill:primary": "SIGKILL of the primary's `{command}-server` (systemd restarts it)",
        },
        "title": "{server} with Sentinel losing its primary",
        "hosts": "three {server} hosts (a primary, two replicas, a sentinel each) and a worker host, molecule/ha-redis",
        "publish": "through the sentinels, asking the struck host's last",
        # The suite's Redis-protocol server (lib.sh: Valkey on Debian 13), which the scenario deploys.
        "server": "{server}",
        "bound": 30,
    },
}


def molecule(env: dict, scenario: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["molecule", command, "-s", scenario], env=env, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"molecule {command} -s {scenario} failed:\n{result.stdout[-3000:]}")
    return result


def measure(scenario: str, tasks: int) -> tuple[float, list[dict], str]:
    """Converge the scenario and run every fault: the converge's seconds, each fault's figures and, when the
    test failed, the end of its output."""
    suite = os.environ.get("TESTHOST_SUITE", "bookworm")
    env = {**os.environ, "MOLECULE_EPHEMERAL_DIRECTORY": str(REPO / ".cache" / "molecule" / f"{scenario}-{suite}")}
    faults = ",".join(SCENARIOS[scenario]["faults"])
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as record:
        env |= {"HA_TASKS": str(tasks), "HA_FAULTS": faults, "HA_RECORD": record.name}
        molecule(env, scenario, "destroy")
        try:
            molecule(env, scenario, "create")
            started = time.monotonic()
            molecule(env, scenario, "converge")
            converge_seconds = round(time.monotonic() - started, 1)
            result = molecule(env, scenario, "verify", check=False)
        finally:
            molecule(env, scenario, "destroy", check=False)
        rows = [json.loads(line) for line in record.read().splitlines()]
    # pytest's error lines (E ...) and the tests that failed
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("E ", "FAILED"))]
    failure = "\n".join(errors[-40:]) if result.returncode != 0 else ""
    return converge_seconds, rows, failure


def report(scenario: str, tasks: int, converge_seconds: float, rows: list[dict], failure: str) -> str:
    command = os.environ.get("TESTHOST_REDIS_SERVER", "redis")
    words = {"command": command, "server": {"redis": "Redis", "valkey": "Valkey"}.get(command, command)}
    kind = {
        key: value.format(**words) if isinstance(value, str) else value for key, value in SCENARIOS[scenario].items()
    }
    faults, server = {fault: text.format(**words) for fault, text in kind["faults"].items()}, kind["server"]
    lines = [
        *report_heading(kind["title"], kind["hosts"] + "); Ansible on the same machine."),
        "",
        f"A cold playbooks/site.yml of the four hosts: {converge_seconds} s. For each fault a publisher on the",
        f"worker host sends {tasks} tasks of 0.02 s ({tasks * 4} during a deploy) {kind['publish']}; the host is",
        "struck once 100 are published. Consumption gap: the longest time a published task waited and none",
        "started; publish gap: the longest time between two acknowledged publishes. Memory: each broker host's",
        f"{server} after the fault.",
        "",
        "| fault | host struck (details) | published | lost | ran twice | publishes retried | consumption gap s"
        f" | publish gap s | {server} MiB per host |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        details = (
            f"leader {row['leader']} / worker's node {row['consumer']}"
            if "leader" in row
            else f"primary after it {row['primary_after']}"
        )
        memory = row.get("rabbitmq_mib", row.get("redis_mib", []))
        lines.append(
            f"| {faults[row['fault']]} | {row['node']} ({details}) | {row['published']}"
            f" | {row['lost']} | {row['ran_twice']} | {row['retries']} | {row['gap']} | {row['publish_gap']}"
            f" | {' / '.join(map(str, memory))} |"
        )
    measured = {row["fault"] for row in rows}
    lines += [
        f"| {faults[fault]} | no figures: the test failed before it recorded them | | | | | | | |"
        for fault in faults
        if fault not in measured
    ]
    if rows:
        memory = [mib for row in rows for mib in row.get("rabbitmq_mib", row.get("redis_mib", []))]
        lines += ["", f"{server} per host: median {statistics.median(memory):.0f} MiB, at most {max(memory)} MiB."]
    if failure:
        bound = kind["bound"]
        lines += ["", f"The test failed (its bounds: 0 lost, consumption again within {bound} s):", "", "```", failure]
        lines += ["```"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="ha-rabbitmq", help="the broker of three")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks published during each fault")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    text = report(args.scenario, args.tasks, *measure(args.scenario, args.tasks))
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
