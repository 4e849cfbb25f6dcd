"""What the HA scenarios (ha-rabbitmq, ha-redis) share: a producer publishing short tasks while a broker host is
lost, the fault itself, and the figures of what the worker then ran (lost, ran twice, consumption and publish gaps)."""

from __future__ import annotations

import json
import os
import subprocess
import time

from conftest import in_worker_environment, record_figures, task_events, wait_for

INSTANCE = "default"
# 200 in `make test`; `make chaos` publishes 1000.
TASKS = int(os.environ.get("HA_TASKS", "200"))
# The fault strikes once this many tasks were published; the rest are published while the host is lost.
STRIKE_AFTER = 100
PUBLISH_INTERVAL = 0.04
# A stopped or cut-off host comes back after this long; a frozen one after FREEZE_SECONDS.
DOWN_SECONDS = 20
FREEZE_SECONDS = 60
# How long the tasks still waiting may go without one more of them running before they count as lost: well beyond
# the visibility timeout of Redis workers' leases and any reconnect.
NO_PROGRESS_SECONDS = 120
PUBLISHER = "ha-test-publisher"
PUBLISHER_OUTPUT = "/run/ha-test-publisher.out"
# Publishes COUNT tasks of 0.02 s, one every INTERVAL s, each acknowledged by the broker (on RabbitMQ, confirmed:
# confirm_publish); a publish that fails is tried again with the same id, as a producer would. It connects to the
# hosts but AVOID first: a publisher stuck with the struck host would leave the worker nothing to consume, and hide
# how long it stopped.
PUBLISH = """
import json, sys, time, uuid
from reliable_celery_app import app
count, interval, avoid = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
app.conf.broker_url = ";".join(sorted(app.conf.broker_url.split(";"), key=lambda url: "@" + avoid + ":" in url))
for _ in range(count):
    task_id = uuid.uuid4().hex
    while True:
        try:
            app.send_task("example.sleep", args=[0.02], queue="celery", task_id=task_id, ignore_result=True)
            break
        except Exception as exc:
            print(json.dumps({"retry": task_id, "error": repr(exc)[:200], "t": time.time()}), flush=True)
            time.sleep(0.2)
    print(json.dumps({"sent": task_id, "t": time.time()}), flush=True)
    time.sleep(interval)
print(json.dumps({"done": count}), flush=True)
"""


def published(worker) -> tuple[dict[str, float], int, bool]:
    """The publisher's acknowledged tasks (id: time), its retries and whether it is done."""
    sent, retries, done = {}, 0, False
    for line in worker.run(f"cat {PUBLISHER_OUTPUT}").stdout.splitlines():
        record = json.loads(line)
        if "sent" in record:
            sent[record["sent"]] = record["t"]
        retries += "retry" in record
        done = done or "done" in record
    return sent, retries, done


def consumption_gap(sent: dict[str, float], starts: dict[str, float], since: float) -> float:
    """The longest time after SINCE during which a published task waited and none started."""
    moments = sorted(t for t in starts.values() if t >= since)
    gap = 0.0
    for before, after in zip(moments, moments[1:], strict=False):
        waiting = [t for task_id, t in sent.items() if t < after and starts.get(task_id, after) >= after]
        if waiting:
            gap = max(gap, after - max(before, min(waiting)))
    return gap


def publish_gap(sent: dict[str, float], since: float) -> float:
    """The longest time after SINCE between two acknowledged publishes."""
    moments = sorted(t for t in sent.values() if t >= since)
    return max((after - before for before, after in zip(moments, moments[1:], strict=False)), default=0.0)


def strike_host(kind: str, node: str, network: str) -> float:
    """Stop (docker stop), freeze (docker pause) or cut off (docker network disconnect) the host NODE; when."""
    commands = {
        "stop": ["docker", "stop", "--time", "10", node],
        "freeze": ["docker", "pause", node],
        "disconnect": ["docker", "network", "disconnect", network, node],
    }
    struck = time.time()
    subprocess.run(commands[kind], check=True, capture_output=True, timeout=120)
    return struck


def recover_host(kind: str, node: str, network: str) -> None:
    """Bring NODE back after strike_host (a killed broker process: systemd restarts it), once it has been lost
    DOWN_SECONDS (FREEZE_SECONDS frozen)."""
    time.sleep(FREEZE_SECONDS if kind == "freeze" else DOWN_SECONDS)
    commands = {
        "stop": ["docker", "start", node],
        "freeze": ["docker", "unpause", node],
        "disconnect": ["docker", "network", "connect", network, node],
    }
    if kind in commands:
        subprocess.run(commands[kind], check=True, capture_output=True, timeout=120)


def publish_through_a_fault(worker, strike, recover, *, count: int, avoid: str) -> dict:
    """Publish COUNT tasks from the worker's host, STRIKE (returns when it struck) once STRIKE_AFTER are published,
    RECOVER once all are, and wait until every published task ran: the figures of the worker's runs."""
    worker.run(f"systemctl stop {PUBLISHER}; systemctl reset-failed {PUBLISHER}; rm -f {PUBLISHER_OUTPUT}")
    argv = ["/opt/celery/current/bin/python", "-c", PUBLISH, str(count), str(PUBLISH_INTERVAL), avoid]
    worker.check_output(in_worker_environment(INSTANCE, argv, unit=PUBLISHER, output=PUBLISHER_OUTPUT))
    try:
        wait_for(lambda: len(published(worker)[0]) >= STRIKE_AFTER, 120, f"{STRIKE_AFTER} published tasks")
        struck = strike()
        try:
            wait_for(lambda: published(worker)[2], 600, "the publisher to publish every task")
        finally:
            recover()
        sent, retries, _done = published(worker)

        def unfinished() -> set[str]:
            ended = {e["id"] for e in task_events(worker, INSTANCE) if e["event"] == "end" and e["state"] == "SUCCESS"}
            return set(sent) - ended

        # A lost task never runs: wait until every task ran, or none more did for NO_PROGRESS_SECONDS.
        waiting, progress = unfinished(), time.monotonic()
        while waiting and time.monotonic() - progress < NO_PROGRESS_SECONDS:
            time.sleep(1)
            still = unfinished()
            progress = time.monotonic() if len(still) < len(waiting) else progress
            waiting = still
        lost = len(waiting)
    finally:
        worker.run(f"systemctl stop {PUBLISHER}")
    starts: dict[str, float] = {}
    runs: dict[str, int] = {}
    for event in task_events(worker, INSTANCE):
        if event["id"] in sent and event["event"] == "start":
            starts[event["id"]] = min(starts.get(event["id"], event["t"]), event["t"])
            runs[event["id"]] = runs.get(event["id"], 0) + 1
    return {
        "published": len(sent),
        "lost": lost,
        "ran_twice": sum(1 for count in runs.values() if count > 1),
        "retries": retries,
        "gap": round(consumption_gap(sent, starts, struck - 1), 2),
        "publish_gap": round(publish_gap(sent, struck - 1), 2),
    }


def record(report_line: str, figures: dict) -> None:
    """The figures to .cache/molecule-logs/HA.txt, and as a JSON line to HA_RECORD if set (benchmarks/ha.py)."""
    record_figures("HA", report_line)
    if os.environ.get("HA_RECORD"):
        with open(os.environ["HA_RECORD"], "a") as output:
            output.write(json.dumps(figures) + "\n")
