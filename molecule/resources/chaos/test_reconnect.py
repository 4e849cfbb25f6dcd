"""Once its broker answers again, every worker consumes again within seconds (the wrapper's
RECONNECT_INTERVALS, docs/delivery.md): the broker is stopped for longer than the first steps of
Celery's own back-off while a publisher on a worker host keeps sending short tasks."""

from __future__ import annotations

import time

from conftest import in_worker_environment, record_figures, task_events, wait_for
from test_chaos import BROKER_KIND, INSTANCE, WORKERS, Fleet

# The broker stopped this long answers again about 16 s after the workers lost it (RabbitMQ's stop
# and start take about 4.5 s more), between the tries of Celery's own back-off at 12 and 20 s after
# the loss: with it, every worker stayed idle about 4 s with the broker up.
DOWN_SECONDS = 11 if BROKER_KIND == "rabbitmq" else 16
# Seconds from the broker's start to each worker's first task: about 1 s is expected; the figure
# is reported, the bound is generous for a busy machine.
RESUME_BOUND = 3
PUBLISHER = "test-publisher"
# A task every 0.1 s for the given seconds, each on a new connection: while the broker is down, each
# attempt fails at once; the first after its start gets through.
PUBLISH = """
import sys, time
from reliable_celery_app import app
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        with app.connection_for_write() as connection:
            connection.connect()
            app.send_task("example.sleep", args=[0.05], queue="celery", connection=connection, ignore_result=True)
    except Exception:
        pass
    time.sleep(0.1)
"""


def first_start_after(host, moment: float) -> float | None:
    starts = [event["t"] for event in task_events(host, INSTANCE) if event["event"] == "start" and event["t"] > moment]
    return min(starts, default=None)


def test_every_worker_consumes_again_within_seconds_of_its_broker_answering() -> None:
    fleet = Fleet()
    publisher_host = fleet.workers[WORKERS[0]]
    argv = ["/opt/celery/current/bin/python", "-c", PUBLISH, str(DOWN_SECONDS + 60)]
    publisher_host.check_output(
        in_worker_environment(INSTANCE, argv, unit=PUBLISHER, output="/run/reliable-celery-test-publisher.out")
    )
    try:
        since = time.time()
        for name, host in fleet.workers.items():
            wait_for(lambda host=host: first_start_after(host, since), 60, f"{name} to run the publisher's tasks")
        service = f"{BROKER_KIND}-server.service"
        answering = float(
            fleet.broker.check_output(
                f"systemctl stop {service} && sleep {DOWN_SECONDS} && systemctl start {service} && date +%s.%N"
            )
        )
        resumed = {
            name: wait_for(lambda host=host: first_start_after(host, answering), 60, f"{name} to consume again")
            - answering
            for name, host in fleet.workers.items()
        }
    finally:
        publisher_host.run(f"systemctl stop {PUBLISHER}")
    figures = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in resumed.items())
    record_figures("REPORT", f"reconnect: {BROKER_KIND} down {DOWN_SECONDS} s, first task after it answered: {figures}")
    assert max(resumed.values()) <= RESUME_BOUND, resumed
