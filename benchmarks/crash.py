"""Benchmark: crash recovery and poison tasks per broker, as a markdown report (asserts nothing).

For each broker this creates the chaos scenario's hosts (a broker and two worker hosts), converges
them with playbooks/site.yml, then:
- measures redelivery after a crash of the worker running a task (SIGKILL of its main process, of
  the pool process running it, its host killed for good): from the fault to the task's next start;
  on Redis with visibility leases (the default) and without (the baseline);
- measures the throughput of short tasks alone and beside poison tasks (docs/delivery.md#poison-tasks);
and destroys the hosts. `make benchmark` runs it (PARTS=crash); it writes docs/benchmarks.md.

    python benchmarks/crash.py --brokers redis --output /tmp/report.md
"""

from __future__ import annotations

import argparse
import subprocess
import time
from statistics import median

from restart_gap import current_unit, events, on_host, send, wait
from stack import benchmark_main, broker_names, hosts, main_pid, molecule, report_heading, timed_converge, wait_active

# Faults after which a running task comes back, and how long the benchmark waits for it.
FAULTS = {
    "kill-main": "SIGKILL of the worker's main process",
    "kill-child": "SIGKILL of the pool process running the task (as the OOM killer does)",
    "host-loss": "the worker's host killed for good (`docker kill`)",
}
REDELIVERY_WAIT_SECONDS = 180
QUIET_SECONDS = 30


def task_events(hosts_: list[str], task_id: str, event: str = "start") -> list[dict]:
    return [e for host in hosts_ for e in events(host) if e["id"] == task_id and e["event"] == event]


def redelivery_after(broker: str, fault: str, task_seconds: float) -> float | None:
    """Strike the worker running a task; seconds until the task starts again (None: not within
    REDELIVERY_WAIT_SECONDS). A lost host is started again afterwards."""
    workers = hosts(broker)
    for host in workers:
        wait_active(host, current_unit(host))
    time.sleep(5)  # both ready and consuming
    (task_id,) = send(workers[0], [("example.sleep", [task_seconds])])
    start = wait(lambda: task_events(workers, task_id), 60, "the task to start")[0]
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
        again = min((s["t"] for s in task_events(survivors, task_id) if s["t"] > struck), default=None)
        time.sleep(0.5)
    if fault == "host-loss":
        subprocess.run(["docker", "start", victim], check=True, capture_output=True)
        booted = ("running", "degraded")
        wait(lambda: on_host(victim, ["systemctl", "is-system-running"], check=False).strip() in booted, 180, "boot")
        wait_active(victim, current_unit(victim))  # a booted host's worker may get its old pid again
    else:
        wait(lambda: main_pid(victim, current_unit(victim)) not in (0, pid), 120, "the struck worker to run again")
    if again is not None:  # the next strike must not cut this run short too (it would then count twice)
        wait(lambda: task_events(survivors, task_id, "end"), 120, "the task's next run to end")
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


def measure(broker: str, args: argparse.Namespace) -> dict:
    molecule(broker, "destroy")
    molecule(broker, "create")
    try:
        timed_converge(broker)
        redelivery = {"on" if broker == "redis" else "": redelivery_rows(broker, args)}
        poison = {
            label: [throughput(broker, args.short_tasks, args.short_seconds, kinds) for _ in range(args.samples)]
            for label, kinds in (("none", []), ("pool", ["pool"] * 3), ("worker", ["worker"]))
        }
        if broker == "redis":  # the baseline: leases off, the visibility timeout the longest task's
            timed_converge(broker, "-e", "celery_worker_redis_leases=false")
            redelivery["off"] = redelivery_rows(broker, args)
    finally:
        molecule(broker, "destroy")
    return {"broker": broker, "redelivery": redelivery, "poison": poison}


def report(results: list[dict], args: argparse.Namespace) -> str:
    names = broker_names()
    lines = report_heading("Crash recovery and poison tasks")
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
        "docs/delivery.md#poison-tasks). Tasks per second from the first start to the last end, the median of",
        f"{args.samples} runs each.",
        "",
        "| broker | beside | tasks/s | of alone | samples tasks/s | succeeded |",
        "|---|---|---|---|---|---|",
    ]
    beside = {
        "none": "nothing",
        "pool": "3 tasks that kill their pool process",
        "worker": "1 task that kills its worker",
    }
    for result in results:
        alone = median(run["per_second"] for run in result["poison"]["none"])
        for label, runs in result["poison"].items():
            rate = median(run["per_second"] for run in runs)
            lines.append(
                f"| {names[result['broker']]} | {beside[label]} | {rate:.2f} | {rate / alone:.0%} |"
                f" {', '.join(format(run['per_second'], 'g') for run in runs)} |"
                f" {', '.join(str(run['succeeded']) for run in runs)} |"
            )
    return "\n".join(lines)


def main() -> None:
    benchmark_main(
        __doc__,
        measure,
        report,
        lambda parser: parser.add_argument(
            "--samples", type=int, default=3, help="strikes per fault, broker and lease mode; runs per throughput row"
        ),
    )


if __name__ == "__main__":
    main()
