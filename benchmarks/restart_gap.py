#!/usr/bin/env python3
"""Benchmark: what a restart under load costs, for the restart module and for `systemctl restart`.

Runs against a test host where the `restart` molecule scenario converged (the worker records
task starts and ends: EXAMPLE_TASK_EVENTS=1). Per method: a long task starts, short tasks fill
the queue, the worker is restarted, and once every task ended the report gives the drain and
ready seconds and the consumption gap: the longest time no task started while the queue still
held tasks. Prints a markdown report; asserts nothing (figures on a busy machine vary).

    make benchmark                    # creates the host, runs this, destroys the host
    benchmarks/restart_gap.py --host rc-restart-bookworm --long-seconds 60 --short-tasks 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

# The instance default's two slots (the celery_worker role's units) and their readiness markers.
SLOTS = {
    "celery-worker@default.service": "/run/celery/worker-default/ready",
    "celery-worker-b@default.service": "/run/celery/worker-default.b/ready",
}
EVENTS = "/var/lib/celery/worker-default/task-events.jsonl"
REDELIVERY_SETTLE_SECONDS = 200
WORKER_ENV = [
    "systemd-run", "--quiet", "--pipe", "--wait", "--collect", "-p", "User=celery",
    "-p", "EnvironmentFile=/etc/celery/worker.env", "-p", "EnvironmentFile=/etc/celery/worker-instances/default.env",
    "-p", "LoadCredential=broker_url:/etc/celery/credentials/worker/broker_url",
    "-p", "LoadCredential=result_backend:/etc/celery/credentials/worker/result_backend",
]  # fmt: skip
SEND = """
import json, sys
from reliable_celery_app import app
print(json.dumps([app.send_task(n, args=a).id for n, a in json.loads(sys.argv[1])]))
"""


# The Debian release of the test hosts (scripts/benchmark.sh sets TESTHOST_SUITE per run).
DEBIAN = {"bookworm": "Debian 12", "trixie": "Debian 13"}[os.environ.get("TESTHOST_SUITE", "bookworm")]


def on_host(host: str, argv: list[str], *, check: bool = True, **kwargs) -> str:
    interactive = ["-i"] if "input" in kwargs else []
    command = ["docker", "exec", *interactive, host, *argv]
    return subprocess.run(command, capture_output=True, text=True, check=check, **kwargs).stdout


def send(host: str, tasks: list[tuple[str, list]]) -> list[str]:
    output = on_host(host, [*WORKER_ENV, "/opt/celery/current/bin/python", "-c", SEND, json.dumps(tasks)])
    return json.loads(output.strip().splitlines()[-1])


def events(host: str) -> list[dict]:
    text = on_host(host, ["sh", "-c", f"cat {EVENTS} 2>/dev/null || true"])
    # Less the start canaries, which a starting worker runs before it consumes its queues.
    return [event for event in map(json.loads, text.splitlines()) if not event["id"].startswith("start-canary-")]


def clear_events(host: str) -> None:
    """Empty the record; a missing one stays missing (root would create it, and the worker could not write it)."""
    on_host(host, ["sh", "-c", f"[ ! -e {EVENTS} ] || : > {EVENTS}"])


def wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)
    return result


def current_unit(host: str) -> str:
    """The slot of the instance default that is enabled for boot."""
    state = {unit: on_host(host, ["systemctl", "is-enabled", unit], check=False).strip() for unit in SLOTS}
    enabled = [unit for unit in SLOTS if state[unit] == "enabled"]
    return enabled[0] if len(enabled) == 1 else next(iter(SLOTS))


def restart_with_module(host: str, strategy: str = "drain") -> dict[str, float]:
    env = {**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}
    first, second = SLOTS
    command = [
        "ansible", "all", "-i", f"{host},", "-c", "community.docker.docker",
        "-m", "reliable.celery.celery_worker_restart",
        "-a", f"name={first} other_slot={second} strategy={strategy}",
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    result = json.loads(output)["plays"][0]["tasks"][0]["hosts"][host]
    return {"drain_seconds": result["drain_seconds"], "ready_seconds": result["ready_seconds"]}


def restart_with_handover(host: str) -> dict[str, float]:
    return restart_with_module(host, "handover")


def restart_with_systemctl(host: str) -> dict[str, float]:
    unit = current_unit(host)
    started = time.monotonic()
    on_host(host, ["systemctl", "restart", unit])
    restarted = time.monotonic()
    pid = on_host(host, ["systemctl", "show", "-p", "MainPID", "--value", unit]).strip()
    marker = SLOTS[unit]
    wait(lambda: f'"pid": {pid},' in on_host(host, ["sh", "-c", f"cat {marker} 2>/dev/null || true"]), 120, "ready")
    return {"drain_seconds": round(restarted - started, 3), "ready_seconds": round(time.monotonic() - restarted, 3)}


def restart_plain(host: str) -> dict[str, float]:
    """`systemctl restart` with systemd's default KillMode=control-group, as most recipes leave it:
    SIGTERM reaches the pool processes too. A runtime drop-in, removed afterwards."""
    unit = current_unit(host)
    drop_in = f"/run/systemd/system/{unit}.d/plain.conf"
    write = f"mkdir -p {drop_in.rsplit('/', 1)[0]} && printf '[Service]\\nKillMode=control-group\\n' > {drop_in}"
    on_host(host, ["sh", "-c", write])
    on_host(host, ["systemctl", "daemon-reload"])
    try:
        return restart_with_systemctl(host)
    finally:
        on_host(host, ["sh", "-c", f"rm -f {drop_in} && systemctl daemon-reload"])


def succeeded(host: str, ids: set[str]) -> set[str]:
    return {e["id"] for e in events(host) if e["id"] in ids and e["event"] == "end" and e["state"] == "SUCCESS"}


def measure(
    host: str, restart: Callable[[str], dict], long_seconds: float, short_tasks: int, short_seconds: float
) -> dict:
    """Restart the host's only consuming worker while a long task runs and short ones are queued."""
    clear_events(host)
    (long_id,) = send(host, [("example.sleep", [long_seconds])])
    wait(lambda: any(e["id"] == long_id for e in events(host)), 60, "the long task to start")
    short_ids = send(host, [("example.sleep", [short_seconds])] * short_tasks)
    time.sleep(2)  # the worker is busy; most short tasks are still queued
    restart_at = float(on_host(host, ["date", "+%s.%N"]))
    timings = restart(host)
    ids = {long_id, *short_ids}
    wait(lambda: {e["id"] for e in events(host) if e["event"] == "end"} >= ids, 600, "every task to end")
    # A task a restart killed runs again once the broker redelivers it: give it that time before
    # counting it lost (the restart scenario's Redis visibility timeout is 180 s).
    deadline = time.monotonic() + REDELIVERY_SETTLE_SECONDS
    while not succeeded(host, ids) >= ids and time.monotonic() < deadline:
        time.sleep(1)
    recorded = [e for e in events(host) if e["id"] in ids]
    starts = sorted(e["t"] for e in recorded if e["event"] == "start")
    last_start = starts[-1]
    window = [restart_at] + [t for t in starts if t >= restart_at]
    gap = max((b - a for a, b in zip(window, window[1:])), default=0.0) if last_start > restart_at else 0.0
    start_counts: dict[str, int] = {}
    for event in recorded:
        if event["event"] == "start":
            start_counts[event["id"]] = start_counts.get(event["id"], 0) + 1
    return {
        **timings,
        "gap_seconds": round(gap, 2),
        "lost": len(ids - succeeded(host, ids)),
        "ran_twice": sum(1 for count in start_counts.values() if count > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host",
        default=f"rc-restart-{os.environ.get('TESTHOST_SUITE', 'bookworm')}",
        help="test-host container (default: %(default)s, the restart scenario's on TESTHOST_SUITE)",
    )
    parser.add_argument("--long-seconds", type=float, default=60)
    parser.add_argument("--short-tasks", type=int, default=200)
    parser.add_argument("--short-seconds", type=float, default=0.2)
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args()

    load = (args.long_seconds, args.short_tasks, args.short_seconds)
    methods = {
        "handover": restart_with_handover,
        "drain": restart_with_module,
        "systemctl": restart_with_systemctl,
        "plain": restart_plain,
    }
    rows = [{"method": method, **measure(args.host, restart, *load)} for method, restart in methods.items()]
    labels = {
        "handover": "`celery_worker_restart` strategy handover (the role's default)",
        "drain": "`celery_worker_restart` strategy drain",
        "systemctl": "`systemctl restart`, the role's unit (KillMode=mixed)",
        "plain": "`systemctl restart` with systemd's default KillMode=control-group",
    }
    report = [
        f"## Restart under load, {DEBIAN} — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}. Test host: {DEBIAN} systemd",
        f"container, Celery 5.7.0, Redis, prefork -c 4. Load: one {args.long_seconds:g} s task running and"
        f" {args.short_tasks} tasks of {args.short_seconds:g} s queued when the restart starts.",
        "",
        "| restart | drain s | ready s | consumption gap s | lost | ran twice |",
        "|---|---|---|---|---|---|",
        *(
            f"| {labels[r['method']]} | {r['drain_seconds']} | {r['ready_seconds']} | {r['gap_seconds']} |"
            f" {r['lost']} | {r['ran_twice']} |"
            for r in rows
        ),
        "",
        "Consumption gap: the longest time no task started while the queue still held tasks. A drain",
        "restart stops consuming when it starts draining, so the gap follows the longest running task; a",
        "handover starts the new worker before the old one drains. Drain and ready seconds of a handover",
        "are the old worker's drain and the new one's start. With KillMode=control-group the running",
        "tasks die at once: the reliable settings requeue them and they run again from the start.",
    ]
    text = "\n".join(report)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
