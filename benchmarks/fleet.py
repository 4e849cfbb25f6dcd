#!/usr/bin/env python3
"""Benchmark: deploys of a fleet of ten worker hosts, as a markdown report (asserts nothing).

Creates the fleet scenario's hosts (molecule/fleet: a broker and ten worker hosts, one pool process
each), then runs with ansible-playbook, timing each run and each worker host's part in it:
- playbooks/site.yml cold, and again on the converged hosts (no change), on 1, 5 and 10 worker hosts, and on
  10 with Ansible's settings that matter for fleets changed one at a time (forks, pipelining, a fact cache);
- a code deploy (a new release of the example app) with handover, `celery_workers_serial` 1 and 5;
- playbooks/restart.yml on 1, 5 and 10 worker hosts.
Every run but the cold one runs under load: a publisher sends a task every 1/RATE s to the queue every
worker consumes, and the report gives the fleet's longest consumption gap (the longest time no task
started anywhere during the run), and how many of the tasks were lost and how many ran twice.

    make benchmark PARTS=fleet
    python benchmarks/fleet.py --output /tmp/fleet.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from restart_gap import WORKER_ENV, on_host
from stack import report_heading

REPO = Path(__file__).resolve().parents[1]
SCENARIO = "fleet"
BROKER = "rc-fleet-broker"
WORKERS = [f"rc-fleet-worker{n:02d}" for n in range(1, 11)]
PUBLISHER = WORKERS[0]
EVENTS = "/var/lib/celery/worker-default/task-events.jsonl"
STOP_FILE = "/run/reliable-celery-benchmark-stop"
# Sends example.add every 1/RATE s until STOP_FILE exists, then prints the ids.
PUBLISH = """
import json, os, sys, time
from reliable_celery_app import app
interval, stop, ids = 1 / float(sys.argv[1]), sys.argv[2], []
with app.producer_or_acquire() as producer:
    while not os.path.exists(stop):
        ids.append(app.send_task("example.add", args=[1, 2], producer=producer).id)
        time.sleep(interval)
print(json.dumps(ids))
"""
SETTLE_SECONDS = 300
# The plays that roll the workers: site.yml's and restart.yml's.
ROLLING_PLAYS = ("Workers", "Restart the Celery workers gracefully, host by host")
# The example app's second version; each deploy names it differently, so each builds a release of its own.
DEPLOYS = {1: "reliable-celery-example==2.0.0", 5: "reliable-celery-example>=2,<3"}


class Fleet:
    def __init__(self, suite: str) -> None:
        self.ephemeral = REPO / ".cache" / "molecule" / f"{SCENARIO}-{suite}"
        self.env = {**os.environ, "MOLECULE_EPHEMERAL_DIRECTORY": str(self.ephemeral)}

    def molecule(self, *command: str) -> None:
        result = subprocess.run(
            ["molecule", *command, "-s", SCENARIO], env=self.env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise SystemExit(f"molecule {' '.join(command)} -s {SCENARIO} failed:\n{result.stdout[-3000:]}")

    def playbook(
        self, name: str, workers: int = len(WORKERS), settings: dict | None = None, **extra_vars: object
    ) -> dict:
        """Run playbooks/NAME on the broker and the first WORKERS worker hosts: its seconds, changed count and
        the seconds each worker host spent in its rolling play."""
        env = {
            **self.env,
            "ANSIBLE_CONFIG": str(self.ephemeral / "ansible.cfg"),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "MOLECULE_EPHEMERAL_DIRECTORY": str(self.ephemeral),
            "TEST_REDIS_SERVER": os.environ.get("TESTHOST_REDIS_SERVER", "redis"),
            **(settings or {}),
        }
        command = [
            "ansible-playbook", "-i", str(self.ephemeral / "inventory"), str(REPO / "playbooks" / name),
            "--limit", ",".join([BROKER, *WORKERS[:workers]]), "-e", json.dumps(extra_vars),
        ]  # fmt: skip
        started = time.monotonic()
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, check=False)
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"{name} {extra_vars} failed:\n{result.stdout[-5000:]}\n{result.stderr[-3000:]}")
        run = json.loads(result.stdout)
        rolling = [play for play in run["plays"] if play["play"]["name"] in ROLLING_PLAYS]
        return {
            "seconds": round(seconds, 1),
            "changed": sum(stats["changed"] for stats in run["stats"].values()),
            "per_host": list(host_seconds(rolling).values()),
        }


def host_seconds(plays: list[dict]) -> dict[str, float]:
    """How long each host spent in PLAYS: from its first task's start to its last task's end. The json callback
    records each `serial` batch as a play of its own, with its own tasks."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for task in (task for play in plays for task in play["tasks"]):
        start = datetime.fromisoformat(task["task"]["duration"]["start"])
        end = datetime.fromisoformat(task["task"]["duration"].get("end", task["task"]["duration"]["start"]))
        for host in task["hosts"]:
            first, last = spans.get(host, (start, end))
            spans[host] = (min(first, start), max(last, end))
    return {host: (last - first).total_seconds() for host, (first, last) in spans.items()}


def events(host: str, ids: set[str]) -> list[dict]:
    text = on_host(host, ["sh", "-c", f"cat {EVENTS} 2>/dev/null || true"])
    return [event for event in map(json.loads, text.splitlines()) if event["id"] in ids]


def fleet_events(ids: set[str]) -> list[dict]:
    with ThreadPoolExecutor(len(WORKERS)) as pool:
        return [event for found in pool.map(lambda host: events(host, ids), WORKERS) for event in found]


def under_load(run, rate: float) -> dict:
    """RUN while tasks are published at RATE per second; RUN's figures with the consumption gap, lost and re-run."""
    on_host(PUBLISHER, ["rm", "-f", STOP_FILE])
    argv = ["docker", "exec", PUBLISHER, *WORKER_ENV, "/opt/celery/current/bin/python", "-c", PUBLISH, str(rate)]
    publisher = subprocess.Popen([*argv, STOP_FILE], stdout=subprocess.PIPE, text=True)
    time.sleep(5)  # the publisher's import, then a steady flow
    began = time.time()
    figures = run()
    ended = time.time()
    time.sleep(2)
    on_host(PUBLISHER, ["touch", STOP_FILE])
    ids = set(json.loads(publisher.communicate(timeout=60)[0].strip().splitlines()[-1]))

    def ended_ids() -> set[str]:
        return {e["id"] for e in fleet_events(ids) if e["event"] == "end" and e["state"] == "SUCCESS"}

    deadline = time.monotonic() + SETTLE_SECONDS
    while ended_ids() < ids and time.monotonic() < deadline:
        time.sleep(2)
    recorded = fleet_events(ids)
    starts = sorted(e["t"] for e in recorded if e["event"] == "start" and began <= e["t"] <= ended)
    moments = [began, *starts, ended]
    runs: dict[str, int] = {}
    for event in recorded:
        if event["event"] == "start":
            runs[event["id"]] = runs.get(event["id"], 0) + 1
    return {
        **figures,
        "tasks": len(ids),
        "gap": round(max(b - a for a, b in zip(moments, moments[1:])), 2),
        "lost": len(ids - ended_ids()),
        "ran_twice": sum(1 for count in runs.values() if count > 1),
    }


SETTINGS_ROUNDS = 3


def ansible_settings(fleet: Fleet) -> list[dict]:
    """A no-change site.yml on the whole fleet with Ansible's settings that matter for fleets, one changed at a time
    from the scenario's ansible.cfg (forks 50, pipelining on, facts read every run): SETTINGS_ROUNDS runs each, in
    turns, so that the machine's drift falls on every setting alike: three runs of one setting differed by up to 31 s
    (2026-12-06)."""
    cache = str(fleet.ephemeral / "facts")
    variants = {
        "as configured: forks 50, pipelining on": {},
        "forks 5 (Ansible's default)": {"ANSIBLE_FORKS": "5"},
        "pipelining off": {"ANSIBLE_PIPELINING": "False"},
        "facts cached (gathering smart, jsonfile)": {
            "ANSIBLE_GATHERING": "smart",
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": cache,
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "86400",
        },
    }
    fleet.playbook("site.yml", settings=variants["facts cached (gathering smart, jsonfile)"])  # fills the cache
    runs: dict[str, list[dict]] = {label: [] for label in variants}
    for _round in range(SETTINGS_ROUNDS):
        for label, settings in variants.items():
            runs[label].append(fleet.playbook("site.yml", settings=settings))
    return [
        {
            "run": f"site.yml, no change, {label}, {SETTINGS_ROUNDS} runs",
            "hosts": len(WORKERS),
            "seconds": statistics.median(run["seconds"] for run in label_runs),
            "spread": (min(run["seconds"] for run in label_runs), max(run["seconds"] for run in label_runs)),
            "changed": max(run["changed"] for run in label_runs),
            "per_host": [seconds for run in label_runs for seconds in run["per_host"]],
        }
        for label, label_runs in runs.items()
    ]


def measure(fleet: Fleet, rate: float) -> list[dict]:
    rows = [{"run": "site.yml, cold", "hosts": 10, **fleet.playbook("site.yml")}]
    for workers in (1, 5, 10):
        again = under_load(lambda workers=workers: fleet.playbook("site.yml", workers), rate)
        rows.append({"run": "site.yml, no change", "hosts": workers, **again})
    rows += ansible_settings(fleet)
    for serial, package in DEPLOYS.items():
        deploy = under_load(
            lambda serial=serial, package=package: fleet.playbook(
                "site.yml", example_app_packages=[package], celery_workers_serial=serial
            ),
            rate,
        )
        rows.append({"run": f"site.yml, code deploy, serial {serial}", "hosts": 10, **deploy})
    for workers in (1, 5, 10):
        restart = under_load(lambda workers=workers: fleet.playbook("restart.yml", workers), rate)
        rows.append({"run": "restart.yml", "hosts": workers, **restart})
    return rows


def report(rows: list[dict], rate: float) -> str:
    hosts = "a broker and 10 worker hosts, molecule/fleet), Celery 5.7.0, Redis, prefork -c 1 per worker host"
    lines = [
        *report_heading("Fleet deploys", hosts + "; Ansible on the same machine."),
        "",
        f"Load: one task every {1 / rate:g} s to the queue every worker host consumes, during every run but the cold",
        "one and those with Ansible's settings changed (without load; total: the median of their runs, and the",
        "range; compare them with the first of them). Consumption gap: the longest time no task started on any host",
        "during the run. Per host: a worker host's time in the Workers play (restart.yml: its rolling play), from its",
        "first task to its last, mean and longest; with `serial` 5 a host's tasks run beside four others'.",
        "",
        "| run | worker hosts | total s | per host s (mean / max) | changed | tasks | consumption gap s | lost"
        " | ran twice |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        per_host = row["per_host"]
        per_host_text = f"{sum(per_host) / len(per_host):.1f} / {max(per_host):.1f}" if per_host else "-"
        seconds = row["seconds"] if "spread" not in row else "{} ({}-{})".format(row["seconds"], *row["spread"])
        lines.append(
            f"| {row['run']} | {row['hosts']} | {seconds} | {per_host_text} | {row['changed']} |"
            f" {row.get('tasks', '-')} | {row.get('gap', '-')} | {row.get('lost', '-')} | {row.get('ran_twice', '-')} |"
        )
    return "\n".join([*lines, "", *growth(rows)])


def growth(rows: list[dict]) -> list[str]:
    """How each run measured on 1 and on 10 worker hosts grows with the hosts."""
    lines = []
    for run in dict.fromkeys(row["run"] for row in rows):
        seconds = {row["hosts"]: row["seconds"] for row in rows if row["run"] == run}
        if {1, len(WORKERS)} <= seconds.keys():
            first, last = seconds[1], seconds[len(WORKERS)]
            per_host = (last - first) / (len(WORKERS) - 1)
            lines.append(
                f"- {run}: {first} s on 1 worker host, {last} s on {len(WORKERS)}: {per_host:+.1f} s per host."
            )
    return ["From 1 to 10 worker hosts:", *lines] if lines else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10, help="tasks published per second during the runs")
    parser.add_argument("--keep", action="store_true", help="leave the hosts running afterwards")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    fleet = Fleet(os.environ.get("TESTHOST_SUITE", "bookworm"))
    fleet.molecule("destroy")
    fleet.molecule("create")
    try:
        rows = measure(fleet, args.rate)
    finally:
        if not args.keep:
            fleet.molecule("destroy")
    text = report(rows, args.rate)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
