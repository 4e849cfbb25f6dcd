"""Benchmark: systemd's watchdog per broker, as a markdown report (asserts nothing).

For each broker this creates the chaos scenario's hosts (a broker and two worker hosts), converges
them with playbooks/site.yml allowing tasks of SOAK_TASK_SECONDS, then:
- strikes a worker with each fault that stops it working while its process lives (SIGSTOP of its
  main process, the example app's remote-control command that blocks its main thread, its consumer
  cancelled) and reports when systemd's watchdog aborted it and when its new process was ready;
- freezes the broker host (docker pause) for FREEZE_SECONDS and reports the same for each worker
  (ready: after the broker is back);
- soaks both workers with CPU-bound tasks at full concurrency and a queue that never empties, and
  counts the restarts, which should be none;
and destroys the hosts. The brokers' fleets are measured at the same time: each soaks beside the
other. `make benchmark` runs it (PARTS=watchdog); it writes docs/benchmarks.md.

    python benchmarks/watchdog.py --brokers redis --soak-minutes 5 --output /tmp/report.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from statistics import median

import testinfra
from restart_gap import current_unit, events, on_host, send, wait
from stack import benchmark_main, broker_names, hosts, main_pid, molecule, report_heading, timed_converge, wait_active

sys.path.insert(0, str(Path(__file__).parents[1] / "molecule"))
from conftest import WATCHDOG_FAULTS, freeze_broker_until_replaced, hang_until_replaced  # the scenarios' helpers

INSTANCE = "default"
WATCHDOG_SECONDS = 20  # celery_worker_watchdog_seconds, the default
CONCURRENCY = 3  # the chaos hosts' instance
SOAK_TASK_SECONDS = 120
FAULTS = {
    "freeze-main": "SIGSTOP of the main process",
    "block-main": "a remote-control command blocks the main thread",
    "cancel-consumer": "`celery control cancel_consumer celery`",
    "freeze-broker": "the broker host frozen {seconds} s (`docker pause`), per worker",
}
FREEZE_SECONDS = 60


def strike(host, fault: str) -> dict[str, float]:
    """One fault on the host's worker: seconds from it to the abort and to the new process's readiness."""
    times = hang_until_replaced(host, INSTANCE, fault, timeout=120)
    return {"aborted": times["aborted"] - times["hung"], "ready": times["ready"] - times["hung"]}


def freeze(broker: str) -> list[dict[str, float]]:
    """The broker host frozen for FREEZE_SECONDS: per worker, seconds to its abort and to its readiness."""
    workers = [testinfra.get_host(f"docker://{name}") for name in hosts(broker)]
    container = hosts(broker)[0].replace("-worker1", "-broker")
    times = freeze_broker_until_replaced(
        container, testinfra.get_host(f"docker://{container}"), workers, INSTANCE, FREEZE_SECONDS
    )
    return [
        {"aborted": aborted - times["frozen"], "ready": ready - times["frozen"]}
        for aborted, ready in zip(times["aborted"], times["ready"], strict=True)
    ]


def soak(broker: str, minutes: float) -> dict:
    """CPU-bound tasks of SOAK_TASK_SECONDS on every pool process of both workers for MINUTES, with
    more queued than they can run meanwhile; then the restarts, watchdog aborts and task counts."""
    workers = hosts(broker)
    units = {host: current_unit(host) for host in workers}
    before = {host: (main_pid(host, unit), restarts(host, unit)) for host, unit in units.items()}
    started = time.time()
    slots = CONCURRENCY * len(workers)
    count = slots * (math.ceil(minutes * 60 / SOAK_TASK_SECONDS) + 1)
    ids = set(send(workers[0], [("example.burn", [SOAK_TASK_SECONDS])] * count))
    time.sleep(minutes * 60)
    soaked = time.time() - started
    after = {host: (main_pid(host, unit), restarts(host, unit)) for host, unit in units.items()}
    aborts = sum(watchdog_aborts(host, unit, started) for host, unit in units.items())
    # What was queued after the soak runs to its end, to count every task.
    wait(lambda: ids <= succeeded(workers), count * SOAK_TASK_SECONDS / slots + 600, "the soak's tasks")
    starts = [e for host in workers for e in events(host) if e["id"] in ids and e["event"] == "start"]
    return {
        "minutes": round(soaked / 60, 1),
        "tasks": count,
        "restarts": sum(after[host][1] - before[host][1] for host in workers),
        "same_processes": all(after[host][0] == before[host][0] for host in workers),
        "watchdog_aborts": aborts,
        "ran_twice": len(starts) - len({e["id"] for e in starts}),
    }


def restarts(host: str, unit: str) -> int:
    return int(on_host(host, ["systemctl", "show", "--property=NRestarts", "--value", unit]))


def watchdog_aborts(host: str, unit: str, since: float) -> int:
    return on_host(host, ["journalctl", "--unit", unit, f"--since=@{int(since)}"]).count("Watchdog timeout")


def succeeded(workers: tuple[str, str]) -> set[str]:
    return {e["id"] for host in workers for e in events(host) if e["event"] == "end" and e.get("state") == "SUCCESS"}


def measure(broker: str, args: argparse.Namespace) -> dict:
    molecule(broker, "destroy")
    molecule(broker, "create")
    try:
        timed_converge(broker, "-e", f"celery_max_task_seconds={SOAK_TASK_SECONDS + 30}")
        workers = hosts(broker)
        for host in workers:
            wait_active(host, current_unit(host))
        victim = testinfra.get_host(f"docker://{workers[0]}")
        detection = {fault: [strike(victim, fault) for _ in range(args.samples)] for fault in WATCHDOG_FAULTS}
        detection["freeze-broker"] = [sample for _ in range(args.samples) for sample in freeze(broker)]
        return {"broker": broker, "detection": detection, "soak": soak(broker, args.soak_minutes)}
    finally:
        molecule(broker, "destroy")


def report(results: list[dict], args: argparse.Namespace) -> str:
    names = broker_names()
    lines = report_heading("Hung workers and systemd's watchdog")
    lines += [
        "",
        "### Detection",
        "",
        f"`WatchdogSec={WATCHDOG_SECONDS}` (celery_worker_watchdog_seconds); the worker pings every quarter of it.",
        "Seconds from the fault to systemd's abort (its journal's `Watchdog timeout`) and to the new process's",
        f"readiness, {args.samples} samples each (freeze: each worker's), the workers idle (the other broker's",
        "fleet may be soaking). A worker is ready after a freeze once the broker is back.",
        "",
        "| broker | fault | median abort s | max abort s | median ready s | max ready s |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for fault, samples in result["detection"].items():
            aborted = [sample["aborted"] for sample in samples]
            ready = [sample["ready"] for sample in samples]
            lines.append(
                f"| {names[result['broker']]} | {FAULTS[fault].format(seconds=FREEZE_SECONDS)}"
                f" | {median(aborted):.1f} | {max(aborted):.1f}"
                f" | {median(ready):.1f} | {max(ready):.1f} |"
            )
    lines += [
        "",
        "### No false restarts",
        "",
        f"Both workers run CPU-bound tasks of {SOAK_TASK_SECONDS} s on all {CONCURRENCY} pool processes each, with",
        "more queued than they can run; the brokers' fleets soak at the same time, on this machine's CPUs.",
        "",
        "| broker | minutes | tasks | restarts | watchdog aborts | same main processes | ran twice |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        s = result["soak"]
        lines.append(
            f"| {names[result['broker']]} | {s['minutes']} | {s['tasks']} | {s['restarts']} | {s['watchdog_aborts']}"
            f" | {'yes' if s['same_processes'] else 'no'} | {s['ran_twice']} |"
        )
    return "\n".join(lines)


def main() -> None:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--samples", type=int, default=3, help="strikes per fault and broker")
        parser.add_argument("--soak-minutes", type=float, default=30)

    benchmark_main(__doc__, measure, report, add_arguments, at_once=True)


if __name__ == "__main__":
    main()
