#!/usr/bin/env python3
"""Benchmark: a RabbitMQ cluster losing a node under load, as a markdown report (asserts nothing).

Creates the ha-rabbitmq scenario's hosts (three broker hosts forming one cluster, a worker host),
converges them with playbooks/site.yml, runs the scenario's failover test with --tasks tasks for each of
its faults (molecule/ha-rabbitmq/tests/test_cluster_failover.py) and destroys the hosts. Per fault the
report gives the tasks confirmed, lost and run twice, the worker's longest consumption gap, the
publisher's longest gap and what each node's RabbitMQ holds in memory after it. The test's bounds stay
its assertions: a fault that breaks one is reported with its figures, not left out.

    make benchmark PARTS=ha
    python benchmarks/ha.py --tasks 1000 --output /tmp/ha.md
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
SCENARIO = "ha-rabbitmq"
# The test's HA_FAULTS, all of them, in its words.
FAULTS = {
    "kill:leader": "SIGKILL of the leader's `beam.smp`",
    "stop:leader": "`docker stop` of the leader, back after 20 s",
    "freeze:leader": "`docker pause` of the leader for 60 s",
    "disconnect:leader": "`docker network disconnect` of the leader for 20 s",
    "freeze:consumer": "`docker pause` of the worker's node for 60 s",
    "reconfigure:cluster": "a deploy that restarts every node, one at a time",
}


def molecule(env: dict, command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["molecule", command, "-s", SCENARIO], env=env, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"molecule {command} -s {SCENARIO} failed:\n{result.stdout[-3000:]}")
    return result


def measure(tasks: int) -> tuple[float, list[dict], str]:
    """Converge the scenario and run every fault: the converge's seconds, each fault's figures and, when the
    test failed, the end of its output."""
    suite = os.environ.get("TESTHOST_SUITE", "bookworm")
    env = {**os.environ, "MOLECULE_EPHEMERAL_DIRECTORY": str(REPO / ".cache" / "molecule" / f"{SCENARIO}-{suite}")}
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as record:
        env |= {"HA_TASKS": str(tasks), "HA_FAULTS": ",".join(FAULTS), "HA_RECORD": record.name}
        molecule(env, "destroy")
        try:
            molecule(env, "create")
            started = time.monotonic()
            molecule(env, "converge")
            converge_seconds = round(time.monotonic() - started, 1)
            result = molecule(env, "verify", check=False)
        finally:
            molecule(env, "destroy", check=False)
        rows = [json.loads(line) for line in record.read().splitlines()]
    # pytest's error lines (E ...) and the tests that failed
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("E ", "FAILED"))]
    failure = "\n".join(errors[-40:]) if result.returncode != 0 else ""
    return converge_seconds, rows, failure


def report(tasks: int, converge_seconds: float, rows: list[dict], failure: str) -> str:
    hosts = "three broker hosts forming one RabbitMQ cluster and a worker host, molecule/ha-rabbitmq"
    lines = [
        *report_heading("A RabbitMQ cluster losing a node", hosts + "); Ansible on the same machine."),
        "",
        f"A cold playbooks/site.yml of the four hosts: {converge_seconds} s. For each fault a publisher on the",
        f"worker host sends {tasks} tasks of 0.02 s ({tasks * 4} during the deploy) with publisher confirms, through",
        "the nodes but the struck one, which is struck once 100 are confirmed. Consumption gap: the longest time a",
        "confirmed task waited and none started; publish gap: the longest time between two confirmed publishes.",
        "Memory: each node's RabbitMQ after the fault.",
        "",
        "| fault | node (leader / worker's node) | confirmed | lost | ran twice | publishes retried | consumption gap s"
        " | publish gap s | RabbitMQ MiB per node |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {FAULTS[row['fault']]} | {row['node']} ({row['leader']} / {row['consumer']}) | {row['confirmed']}"
            f" | {row['lost']} | {row['ran_twice']} | {row['retries']} | {row['gap']} | {row['publish_gap']}"
            f" | {' / '.join(map(str, row['rabbitmq_mib']))} |"
        )
    measured = {row["fault"] for row in rows}
    lines += [
        f"| {FAULTS[fault]} | no figures: the test failed before it recorded them | | | | | | | |"
        for fault in FAULTS
        if fault not in measured
    ]
    if rows:
        memory = [mib for row in rows for mib in row["rabbitmq_mib"]]
        lines += ["", f"RabbitMQ per node: median {statistics.median(memory):.0f} MiB, at most {max(memory)} MiB."]
    if failure:
        lines += ["", "The test failed (its bounds: 0 lost, consumption again within 10 s):", "", "```", failure, "```"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks published during each fault")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    text = report(args.tasks, *measure(args.tasks))
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
