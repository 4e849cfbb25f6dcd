"""Benchmark: the whole stack per broker, as a markdown report (asserts nothing).

For each broker this creates the chaos scenario's hosts (a broker and two worker hosts), then:
- times playbooks/site.yml cold and again on the converged hosts (idempotent: changed=0);
- measures the restart consumption gap with one worker consuming: `systemctl restart` of a unit
  written as the Celery documentation shows (celery multi, Type=forking) against the
  celery_worker_restart module on the collection's unit; same release, app and settings;
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
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from restart_gap import (
    DEBIAN,
    current_unit,
    measure,
    on_host,
    restart_with_handover,
    restart_with_module,
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


# The chaos scenarios' hosts; BENCHMARK_SCENARIO names copies of them (e.g. "px-{broker}", hosts
# rc-px-redis-worker1 ...) for a run beside `make test`, which uses the originals.
SCENARIO = os.environ.get("BENCHMARK_SCENARIO", "chaos-{broker}")


def hosts(broker: str) -> tuple[str, str]:
    scenario = SCENARIO.format(broker=broker)
    return f"rc-{scenario}-worker1", f"rc-{scenario}-worker2"


def molecule(broker: str, *command: str, ansible_args: tuple[str, ...] = ()) -> str:
    scenario = SCENARIO.format(broker=broker)
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


def converge_and_measure(broker: str, args: argparse.Namespace) -> dict:
    molecule(broker, "destroy")
    molecule(broker, "create")
    try:
        cold = timed_converge(broker)
        again = timed_converge(broker)
        gaps = restart_gaps(broker, args.long_seconds, args.short_tasks, args.short_seconds)
    finally:
        molecule(broker, "destroy")
    return {"broker": broker, "cold": cold, "again": again, "gaps": gaps}


def broker_names() -> dict[str, str]:
    # chaos-redis deploys the suite's Redis-protocol server (scripts/lib.sh, use_testhost_suite).
    return {"redis": os.environ.get("TESTHOST_REDIS_SERVER", "redis").capitalize(), "rabbitmq": "RabbitMQ"}


CHAOS_HOSTS = (
    "a broker and two worker hosts, the chaos scenarios' inventories; on RabbitMQ the broker host also runs beat"
    " and Flower), Celery 5.7.0, prefork -c 3."
)


def report_heading(title: str, hosts: str = CHAOS_HOSTS) -> list[str]:
    """A report's title (with the suite and the time) and where it was measured: HOSTS, after "Debian N systemd
    containers (", says which."""
    return [
        f"## {title}, {DEBIAN} — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}.",
        f"Hosts: {DEBIAN} systemd containers ({hosts}",
    ]


def report(results: list[dict], args: argparse.Namespace) -> str:
    names = broker_names()
    lines = [
        *report_heading("The stack per broker"),
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


def benchmark_main(doc: str, measure, report, add_arguments=lambda _parser: None, at_once: bool = False) -> None:
    """The command line of the benchmarks on the chaos scenarios' hosts: MEASURE each broker (AT_ONCE:
    all brokers at the same time), print the REPORT of all and write it to --output."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--brokers", nargs="+", choices=BROKERS, default=list(BROKERS))
    parser.add_argument("--long-seconds", type=float, default=25, help="below the hosts' 30 s task limit")
    parser.add_argument("--short-tasks", type=int, default=200)
    parser.add_argument("--short-seconds", type=float, default=0.2)
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    add_arguments(parser)
    args = parser.parse_args()
    if at_once:
        with ThreadPoolExecutor(len(args.brokers)) as pool:
            results = list(pool.map(lambda broker: measure(broker, args), args.brokers))
    else:
        results = [measure(broker, args) for broker in args.brokers]
    text = report(results, args)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


def main() -> None:
    benchmark_main(__doc__, converge_and_measure, report)


if __name__ == "__main__":
    main()
