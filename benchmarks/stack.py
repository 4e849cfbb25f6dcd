"""Benchmark: the whole stack per broker, as a markdown report (asserts nothing).

For each broker this creates the chaos scenario's hosts (a broker and two worker hosts), then:
- times playbooks/site.yml cold and again on the converged hosts (idempotent: changed=0);
- measures the restart consumption gap with one worker consuming: `systemctl restart` of a unit
  written as the Celery documentation shows (celery multi, Type=forking) against the
  celery_worker_restart module on the collection's unit; same release, app and settings;
- measures redelivery after a crash of the worker running a task (SIGKILL of its main process, of
  the pool process running it, its host killed): from the fault to the task's next start; on Redis
  with visibility leases and without;
- measures the throughput of short tasks beside poison tasks (poison containment);
and destroys the hosts. Needs the toolchain and the example wheelhouse, which `make benchmark`
provides; it writes docs/benchmarks.md.

    make benchmark
    python benchmarks/stack.py --brokers redis --output /tmp/report.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

from restart_gap import (
    DEBIAN,
    current_unit,
    events,
    measure,
    on_host,
    restart_with_handover,
    restart_with_module,
    send,
    wait,
)

BROKERS = ("redis", "rabbitmq")
OFFICIAL_UNIT = "celery-official.service"
# The unit from Celery's "Daemonization" guide, run on the same release, app and settings as the
# collection's unit (env files and app wrapper). systemd would expand %n itself, hence %%n.
OFFICIAL_UNIT_TEXT = """\
[Unit]
Description=Celery Service (as in Celery's daemonization guide)
After=network.target

[Service]
Type=forking
User=celery
Group=celery
EnvironmentFile=/etc/celery/worker.env
EnvironmentFile=/etc/celery/worker-instances/default.env
LoadCredential=broker_url:/etc/celery/credentials/worker/broker_url
LoadCredential=result_backend:/etc/celery/credentials/worker/result_backend
Environment=STATE_DIRECTORY=/var/lib/celery/worker-default
RuntimeDirectory=celery-official
LogsDirectory=celery-official
WorkingDirectory=/var/lib/celery
ExecStart=/bin/sh -c '/opt/celery/current/bin/celery -A reliable_celery_app multi start official \\
    --pidfile=/run/celery-official/%%n.pid --logfile=/var/log/celery-official/%%n%%I.log $CELERY_WORKER_ARGS'
ExecStop=/bin/sh -c '/opt/celery/current/bin/celery multi stopwait official \\
    --pidfile=/run/celery-official/%%n.pid --logfile=/var/log/celery-official/%%n%%I.log'
Restart=always

[Install]
WantedBy=multi-user.target
"""


def hosts(broker: str) -> tuple[str, str]:
    return f"rc-chaos-{broker}-worker1", f"rc-chaos-{broker}-worker2"


def molecule(broker: str, *command: str, ansible_args: tuple[str, ...] = ()) -> str:
    scenario = f"chaos-{broker}"
    argv = ["molecule", *command, "-s", scenario, *(("--", *ansible_args) if ansible_args else ())]
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"molecule {' '.join(command)} -s {scenario} failed:\n{result.stdout[-3000:]}")
    return result.stdout


def timed_converge(broker: str, *ansible_args: str) -> dict[str, float]:
    started = time.monotonic()
    output = molecule(broker, "converge", ansible_args=ansible_args)
    changed = sum(int(n) for n in re.findall(r"\bchanged=(\d+)", output))
    return {"seconds": round(time.monotonic() - started, 1), "changed": changed}


def main_pid(host: str, unit: str) -> int:
    return int(on_host(host, ["systemctl", "show", "-p", "MainPID", "--value", unit]).strip())


def restart_gaps(broker: str, long_seconds: float, short_tasks: int, short_seconds: float) -> dict[str, dict]:
    """One worker consumes (the other host's is stopped), so the gap is the fleet's gap."""
    worker, other = hosts(broker)
    load = (long_seconds, short_tasks, short_seconds)
    other_unit = current_unit(other)
    on_host(other, ["systemctl", "stop", other_unit])
    try:
        ours = current_unit(worker)
        on_host(worker, ["systemctl", "stop", ours])
        on_host(worker, ["sh", "-c", f"cat > /etc/systemd/system/{OFFICIAL_UNIT}"], input=OFFICIAL_UNIT_TEXT)
        on_host(worker, ["systemctl", "daemon-reload"])
        on_host(worker, ["systemctl", "start", OFFICIAL_UNIT])
        rows = {"official": measure(worker, restart_with_systemctl_official, *load)}
        remove_official_unit(worker)
        on_host(worker, ["systemctl", "start", ours])
        rows["drain"] = measure(worker, restart_with_module, *load)
        rows["handover"] = measure(worker, restart_with_handover, *load)
    finally:
        remove_official_unit(worker)
        on_host(worker, ["systemctl", "start", current_unit(worker)])
        on_host(other, ["systemctl", "start", other_unit])
    return rows


def remove_official_unit(host: str) -> None:
    on_host(host, ["sh", "-c", f"systemctl stop {OFFICIAL_UNIT}; rm -f /etc/systemd/system/{OFFICIAL_UNIT}"])
    on_host(host, ["systemctl", "daemon-reload"])


def restart_with_systemctl_official(host: str) -> dict[str, float]:
    started = time.monotonic()
    on_host(host, ["systemctl", "restart", OFFICIAL_UNIT])
    return {"drain_seconds": round(time.monotonic() - started, 3)}


def wait_active(host: str, unit: str) -> None:
    wait(lambda: on_host(host, ["systemctl", "is-active", unit], check=False).strip() == "active", 120, unit)


# Faults after which a running task comes back, and how long the benchmark waits for it.
FAULTS = {
    "kill-main": "SIGKILL of the worker's main process",
    "kill-child": "SIGKILL of the pool process running the task (as the OOM killer does)",
    "host-loss": "the worker's host killed for good (`docker kill`)",
}
REDELIVERY_WAIT_SECONDS = 300
QUIET_SECONDS = 30


def starts_on(hosts_: list[str], task_id: str) -> list[dict]:
    return [e for host in hosts_ for e in events(host) if e["id"] == task_id and e["event"] == "start"]


def redelivery_after(broker: str, fault: str, task_seconds: float) -> float | None:
    """Strike the worker running a task; seconds until the task starts again (None: not within
    REDELIVERY_WAIT_SECONDS). A lost host is started again afterwards."""
    workers = hosts(broker)
    for host in workers:
        wait_active(host, current_unit(host))
    time.sleep(5)  # both ready and consuming
    (task_id,) = send(workers[0], [("example.sleep", [task_seconds])])
    start = wait(lambda: starts_on(workers, task_id), 60, "the task to start")[0]
    victim = start["hostname"]
    survivors = [host for host in workers if host != victim] if fault == "host-loss" else list(workers)
    unit = current_unit(victim)
    pid = start["pid"] if fault == "kill-child" else main_pid(victim, unit)
    if fault == "host-loss":
        struck = time.time()  # the containers share the controller's clock
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True)
    else:
        struck = float(on_host(victim, ["sh", "-c", f"kill -KILL {pid} && date +%s.%N"]))
    deadline = time.monotonic() + REDELIVERY_WAIT_SECONDS
    again = None
    while again is None and time.monotonic() < deadline:
        again = min((s["t"] for s in starts_on(survivors, task_id) if s["t"] > struck), default=None)
        time.sleep(0.5)
    if fault == "host-loss":
        subprocess.run(["docker", "start", victim], check=True, capture_output=True)
        booted = ("running", "degraded")
        wait(lambda: on_host(victim, ["systemctl", "is-system-running"], check=False).strip() in booted, 180, "boot")
    wait(lambda: main_pid(victim, current_unit(victim)) not in (0, pid), 120, "the struck worker to run again")
    return None if again is None else round(again - struck, 2)


def throughput(broker: str, tasks: int, seconds: float, poison: list[str]) -> dict:
    """TASKS tasks of SECONDS sent at once with POISON tasks (example.crash of each kind listed):
    tasks per second from the first start to the last end, and how many succeeded. A task that ran
    beside a worker-killing one at each of its runs is a dead letter with it: the wait ends once
    no task has ended for QUIET_SECONDS."""
    workers = hosts(broker)
    for host in workers:
        wait_active(host, current_unit(host))
    time.sleep(5)
    ids = send(workers[0], [("example.crash", [kind]) for kind in poison] + [("example.sleep", [seconds])] * tasks)
    wanted = set(ids[len(poison) :])

    def ended() -> list[dict]:
        return [e for host in workers for e in events(host) if e["id"] in wanted and e["event"] == "end"]

    deadline, last_count, last_change = time.monotonic() + 600, -1, time.monotonic()
    while (count := len({e["id"] for e in ended()})) < len(wanted) and time.monotonic() < deadline:
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > QUIET_SECONDS:
            break
        time.sleep(1)
    first = min(e["t"] for host in workers for e in events(host) if e["id"] in wanted and e["event"] == "start")
    last = max(e["t"] for e in ended())
    for host in workers:  # a whole-worker kill restarts the worker: let it come back
        wait_active(host, current_unit(host))
    return {"per_second": round(len(wanted) / (last - first), 2), "succeeded": len({e["id"] for e in ended()})}


def redelivery_rows(broker: str, args: argparse.Namespace) -> dict[str, list[float | None]]:
    return {
        fault: [redelivery_after(broker, fault, args.long_seconds) for _ in range(args.samples)] for fault in FAULTS
    }


def converge_and_measure(broker: str, args: argparse.Namespace) -> dict:
    molecule(broker, "destroy")
    molecule(broker, "create")
    try:
        cold = timed_converge(broker)
        again = timed_converge(broker)
        gaps = restart_gaps(broker, args.long_seconds, args.short_tasks, args.short_seconds)
        redelivery = {"on" if broker == "redis" else "": redelivery_rows(broker, args)}
        poison = {
            label: throughput(broker, args.short_tasks, args.short_seconds, kinds)
            for label, kinds in (("none", []), ("pool", ["pool"] * 3), ("worker", ["worker"]))
        }
        if broker == "redis":  # the baseline: leases off, the visibility timeout the longest task's
            timed_converge(broker, "-e", "celery_worker_redis_leases=false")
            redelivery["off"] = redelivery_rows(broker, args)
    finally:
        molecule(broker, "destroy")
    return {"broker": broker, "cold": cold, "again": again, "gaps": gaps, "redelivery": redelivery, "poison": poison}


def report(results: list[dict], args: argparse.Namespace) -> str:
    # chaos-redis deploys the suite's Redis-protocol server (scripts/lib.sh, use_testhost_suite).
    names = {"redis": os.environ.get("TESTHOST_REDIS_SERVER", "redis").capitalize(), "rabbitmq": "RabbitMQ"}
    lines = [
        f"## The stack per broker, {DEBIAN} — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}. Hosts: {DEBIAN} systemd",
        "containers (a broker and two worker hosts, the chaos scenarios' inventories; on RabbitMQ the broker",
        "host also runs beat and Flower), Celery 5.7.0, prefork -c 3.",
        "",
        "### Restart under load",
        "",
        f"One worker consuming; one {args.long_seconds:g} s task running and {args.short_tasks} tasks of"
        f" {args.short_seconds:g} s queued when the restart starts. Consumption gap: the longest time no task",
        "started while the queue still held tasks.",
        "",
        "| broker | restart | consumption gap s | lost | ran twice |",
        "|---|---|---|---|---|",
    ]
    labels = {
        "official": "`systemctl restart`, unit as in Celery's guide (multi, Type=forking)",
        "drain": "`celery_worker_restart` strategy drain, the collection's unit",
        "handover": "`celery_worker_restart` strategy handover (the default), the collection's units",
    }
    for result in results:
        for method, label in labels.items():
            row = result["gaps"][method]
            lines.append(
                f"| {names[result['broker']]} | {label} | {row['gap_seconds']} | {row['lost']} | {row['ran_twice']} |"
            )
    lines += [
        "",
        "### Redelivery after a crash",
        "",
        f"A {args.long_seconds:g} s task runs on one of two workers when the fault strikes. Seconds from the fault",
        f"to the task's next start ({args.samples} samples each). On Redis with visibility leases (the default;",
        "the chaos hosts' lease is 10 s) and without (the visibility timeout is then the longest task + margin,",
        f"30 + 15 s); '> {REDELIVERY_WAIT_SECONDS}' means not within {REDELIVERY_WAIT_SECONDS} s.",
        "",
        "| broker | fault | median s | max s | samples s |",
        "|---|---|---|---|---|",
    ]
    modes = {"on": ", leases on", "off": ", leases off", "": ""}

    def shown(sample: float | None) -> str:
        return f"> {REDELIVERY_WAIT_SECONDS}" if sample is None else f"{sample:g}"

    for result in results:
        for mode, rows in result["redelivery"].items():
            for fault, samples in rows.items():
                known = [sample for sample in samples if sample is not None]
                middle = f"{median(known):.2f}" if len(known) == len(samples) else "-"
                worst = f"{max(known):.2f}" if len(known) == len(samples) else f"> {REDELIVERY_WAIT_SECONDS}"
                lines.append(
                    f"| {names[result['broker']]}{modes[mode]} | {FAULTS[fault]} | {middle} | {worst} |"
                    f" {', '.join(shown(sample) for sample in samples)} |"
                )
    lines += [
        "",
        "### Throughput beside poison tasks",
        "",
        f"{args.short_tasks} tasks of {args.short_seconds:g} s sent at once on two workers, alone, beside 3 tasks that",
        "kill their pool process, and beside 1 task that kills its worker (each runs 3 times, then is a dead letter:",
        "docs/delivery.md#poison-tasks). Tasks per second from the first start to the last end.",
        "",
        "| broker | beside | tasks/s | of alone | succeeded |",
        "|---|---|---|---|---|",
    ]
    beside = {
        "none": "nothing",
        "pool": "3 tasks that kill their pool process",
        "worker": "1 task that kills its worker",
    }
    for result in results:
        alone = result["poison"]["none"]["per_second"]
        for label, row in result["poison"].items():
            lines.append(
                f"| {names[result['broker']]} | {beside[label]} | {row['per_second']} |"
                f" {row['per_second'] / alone:.0%} | {row['succeeded']} |"
            )
    lines += [
        "",
        "### playbooks/site.yml",
        "",
        "| broker | cold converge s | again s | changed again |",
        "|---|---|---|---|",
        *(
            f"| {names[r['broker']]} | {r['cold']['seconds']} | {r['again']['seconds']} | {r['again']['changed']} |"
            for r in results
        ),
        "",
        "Cold: fresh hosts, apt and pip from the local wheelhouse (the broker from Debian's archive).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS))
    parser.add_argument("--long-seconds", type=float, default=25, help="below the hosts' 30 s task limit")
    parser.add_argument("--short-tasks", type=int, default=200)
    parser.add_argument("--short-seconds", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=3, help="strikes per fault, broker and lease mode")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    text = report([converge_and_measure(broker, args) for broker in args.brokers], args)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
