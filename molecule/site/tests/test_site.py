"""playbooks/site.yml on a fleet: routing across hosts, one beat, Flower behind auth, a Redis
that keeps queued tasks, the roles included from someone else's playbook."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import (
    REDIS_CONFIG_DIR,
    REDIS_SERVICE,
    current_node,
    current_unit,
    fingerprint,
    in_worker_environment,
    journal,
    main_pid,
    recap,
    record_figures,
    redis_cli,
    run_playbook,
    scenario_file,
    scenario_host,
    send_tasks,
    starts_and_ends,
    task_events,
    task_results,
    unit_properties,
    wait_for,
)

BROKER, WORKER1, WORKER2, BEAT = "rc-site-broker", "rc-site-worker1", "rc-site-worker2", "rc-site-beat"
# examples/inventory/group_vars: the demo's secrets, deployed by the scenario. The Redis users'
# passwords hold URL-reserved characters: their URLs carry them percent-encoded.
REDIS_PASSWORDS = {
    "worker": "Demo/Worker#Secret?4b1e@93a7%40",
    "beat": "Demo/Beat#Secret?0d2c@9e11%2F",
    "flower": "Demo/Flower#Secret?7f3a@c0de:",
}
FLOWER_USER, FLOWER_PASSWORD = "admin", "Demo-Flower-Secret-91c2"
SECRETS = (
    *REDIS_PASSWORDS.values(),
    *(quote(password, safe="") for password in REDIS_PASSWORDS.values()),
    FLOWER_PASSWORD,
)
TICK_SECONDS = 5.0
# What the roles manage, without /var/lib: the workers record every beat tick there.
SITE_PATHS = f"/etc/celery /etc/systemd/system {REDIS_CONFIG_DIR} /opt/celery /opt/celery-beat /opt/celery-flower"


@pytest.fixture(scope="module")
def fleet() -> dict:
    return {name: scenario_host(name) for name in (BROKER, WORKER1, WORKER2, BEAT)}


def test_tasks_routed_to_a_queue_run_only_on_the_hosts_consuming_it(fleet) -> None:
    worker1 = fleet[WORKER1]
    reports = send_tasks(worker1, [("example.whoami", [], "reports")] * 8)
    # Tasks of 0.5 s: one worker holds 2 at a time, so a burst reaches both hosts. An idle worker on Redis looks
    # for a message every 0.1 s (docs/delivery.md): one that is fetching takes instant tasks as fast as they come.
    shared = send_tasks(worker1, [("example.sleep", [0.5], "celery")] * 16)
    report_nodes = {result["node"] for result in task_results(worker1, reports)}
    shared_hosts = {result["hostname"] for result in task_results(worker1, shared)}
    assert report_nodes == {current_node(fleet[WORKER2], "reports")}
    assert shared_hosts <= {WORKER1, WORKER2}, shared_hosts
    assert len(shared_hosts) == 2, f"the queue celery is consumed on both worker hosts, got {shared_hosts}"


def test_beat_runs_on_one_host_only(fleet) -> None:
    active = {name: host.run("systemctl is-active celery-beat.service").stdout.strip() for name, host in fleet.items()}
    assert active[BEAT] == "active", journal(fleet[BEAT], "celery-beat")
    assert [name for name, state in active.items() if state == "active"] == [BEAT]
    # PersistentScheduler's shelve (the dbm module adds the suffix).
    assert fleet[BEAT].run("ls /var/lib/celery/beat/schedule*").rc == 0


def tick_starts(fleet, since: float) -> list[dict]:
    events = task_events(fleet[WORKER1]) + task_events(fleet[WORKER2])
    return sorted(
        (e for e in events if e["name"] == "example.tick" and e["event"] == "start" and e["t"] >= since),
        key=lambda e: e["t"],
    )


def test_beat_sends_each_periodic_task_once_per_tick_across_the_fleet(fleet) -> None:
    since = time.time()
    count = 6

    def enough_ticks() -> list[dict] | None:
        found = tick_starts(fleet, since)
        return found if len(found) >= count else None

    ticks = wait_for(enough_ticks, 90, f"{count} beat ticks", interval=1)[:count]
    ids = [tick["id"] for tick in ticks]
    assert len(ids) == len(set(ids)), f"a tick ran twice: {ticks}"
    # One beat sends a tick every TICK_SECONDS: 6 ticks span 5 intervals, less the few seconds a start may
    # wait on a busy host (so no bound on the gap between two starts). Two beats, or each tick sent twice,
    # would put 6 runs within 3 intervals.
    span = ticks[-1]["t"] - ticks[0]["t"]
    assert span > 3.5 * TICK_SECONDS, f"{count} ticks within {span:.1f} s: more than one run per tick"
    by_id = starts_and_ends(task_events(fleet[WORKER1]) + task_events(fleet[WORKER2]), ids)
    assert all(len(events["start"]) == 1 for events in by_id.values())


def test_beat_refuses_a_play_with_more_than_one_host(fleet) -> None:
    before = {name: fingerprint(fleet[name], SITE_PATHS) for name in (WORKER1, WORKER2)}
    result = run_playbook(scenario_file("beat_on_workers.yml"))
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert "celery_beat runs one beat per schedule" in output, output[-3000:]
    assert {name: fingerprint(fleet[name], SITE_PATHS) for name in (WORKER1, WORKER2)} == before


FLOWER_GET = """
import sys, urllib.request, urllib.error, base64
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", "Basic " + base64.b64encode(sys.argv[2].encode()).decode())
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def test_site_refuses_workers_whose_tasks_outlast_the_brokers_consumer_timeout(fleet) -> None:
    """One number for the stack: a worker's own longer max task, on RabbitMQ, stops the run
    before any host changes."""
    before = {name: fingerprint(host, SITE_PATHS) for name, host in fleet.items()}
    site = Path(__file__).parents[3] / "playbooks" / "site.yml"
    result = run_playbook(site, extra_vars={"celery_broker_type": "rabbitmq", "celery_worker_max_task_seconds": 3600})
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "longer than the consumer_timeout of the broker" in " ".join(output.split()), output[-3000:]
    assert "PLAY [Broker]" not in result.stdout, "the run went on after the refusal"
    assert {name: fingerprint(host, SITE_PATHS) for name, host in fleet.items()} == before


@pytest.mark.parametrize(("client", "address"), [(BROKER, "127.0.0.1"), (BEAT, BROKER)])
def test_flower_answers_with_auth_and_refuses_without(fleet, client: str, address: str) -> None:
    url = f"http://{address}:5555/flower/api/workers"
    get = ["python3", "-c", FLOWER_GET, url]
    assert fleet[client].check_output(shlex.join([*get, f"{FLOWER_USER}:{FLOWER_PASSWORD}"])) == "200"
    assert fleet[client].check_output(shlex.join(get)) == "401"
    assert fleet[client].check_output(shlex.join([*get, f"{FLOWER_USER}:wrong-password"])) == "401"


def test_redis_has_aof_on_and_refuses_unauthenticated_clients(fleet) -> None:
    broker = fleet[BROKER]
    assert redis_cli(broker, "CONFIG", "GET", "appendonly").stdout.split() == ["appendonly", "yes"]
    anonymous = redis_cli(broker, "PING", user=None)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    # From another host, over the network, too.
    assert "NOAUTH" in fleet[WORKER1].run(f"python3 -c {shlex.quote(REDIS_PING)} {BROKER}").stdout


REDIS_PING = """
import socket, sys
with socket.create_connection((sys.argv[1], 6379), timeout=5) as connection:
    connection.sendall(b"PING\\r\\n")
    print(connection.recv(200).decode())
"""


def running_workers(host) -> str:
    units = "systemctl list-units --plain --no-legend --state=running 'celery-worker@*' 'celery-worker-b@*'"
    return host.check_output(f"{units} | cut -d' ' -f1")


# Ten queued messages taken and put back in one transaction, as kombu restores unacknowledged ones
# (one write per message: Redis 7 logs a transaction of a single write without MULTI/EXEC).
REQUEUE = """
from reliable_celery_app import app
client = app.connection().default_channel.client
messages = [client.rpop("celery") for _ in range(10)]
with client.pipeline(transaction=True) as pipe:
    for message in messages:
        pipe.lpush("celery", message)
    pipe.execute()
"""


def test_a_redis_restart_with_queued_tasks_loses_none(fleet) -> None:
    broker, worker1, worker2 = fleet[BROKER], fleet[WORKER1], fleet[WORKER2]
    # Nothing consumes or adds to the queue meanwhile: the workers and beat are stopped.
    fleet[BEAT].check_output("systemctl stop celery-beat.service")
    workers = {host: running_workers(host).split() for host in (worker1, worker2)}
    for host, units in workers.items():
        host.check_output(f"systemctl stop {' '.join(units)}")
    try:
        queued = send_tasks(worker1, [("example.add", [n, n], "celery") for n in range(30)])
        assert redis_cli(broker, "-n", "0", "LLEN", "celery").stdout.strip() == "30"
        # Redis replays the append-only file's transactions as its default user.
        worker1.check_output(in_worker_environment("default", ["/opt/celery/current/bin/python", "-c", REQUEUE]))
        assert redis_cli(broker, "-n", "0", "LLEN", "celery").stdout.strip() == "30"
        broker.check_output(f"systemctl restart {REDIS_SERVICE}")
        wait_for(lambda: redis_cli(broker, "PING").stdout.strip() == "PONG", 30, "Redis to answer after its restart")
        assert redis_cli(broker, "-n", "0", "LLEN", "celery").stdout.strip() == "30"
    finally:
        for host, units in workers.items():
            host.check_output(f"systemctl start {' '.join(units)}")
        fleet[BEAT].check_output("systemctl start celery-beat.service")
    results = task_results(worker1, queued, timeout=120)
    assert [result["result"] for result in results] == [2 * n for n in range(30)]


def test_the_roles_converge_when_included_from_another_playbook(fleet) -> None:
    """An infra repo's playbook: its own plays, handlers and group names; the roles through
    include_role/import_role with only their documented variables."""
    before = {name: fingerprint(host, SITE_PATHS) for name, host in fleet.items()}
    result = run_playbook(scenario_file("infra_repo_playbook.yml"))
    assert result.returncode == 0, result.stdout[-5000:]
    for name in fleet:
        counts = recap(result, name)
        assert counts["failed"] == 0, (name, counts)
        assert counts["changed"] == 1, (name, counts)  # the infra play's own task, nothing of the roles
    assert "the infra repo's own handler ran" in result.stdout
    assert "ran inside a reliable.celery role" not in result.stdout
    assert {name: fingerprint(host, SITE_PATHS) for name, host in fleet.items()} == before


def test_restart_playbook_rolls_every_worker_host_by_host(fleet) -> None:
    instances = [(WORKER1, "default"), (WORKER2, "default"), (WORKER2, "reports")]

    def started(name: str, instance: str) -> tuple[str, int, int]:
        unit = current_unit(fleet[name], instance)
        properties = unit_properties(fleet[name], unit, "MainPID", "ExecMainStartTimestampMonotonic")
        return unit, int(properties["MainPID"]), int(properties["ExecMainStartTimestampMonotonic"])

    before = [started(name, instance) for name, instance in instances]
    result = run_playbook(Path(__file__).parents[3] / "playbooks" / "restart.yml")
    assert result.returncode == 0, result.stdout[-5000:]
    after = [started(name, instance) for name, instance in instances]
    assert all(new[1] != old[1] for old, new in zip(before, after)), (before, after)
    # default hands over to its other slot (the default restart_strategy); reports drains in place.
    moved = [new[0] != old[0] for old, new in zip(before, after)]
    assert moved == [True, True, False], (before, after)
    for (name, _instance), (old_unit, _pid, _start), (new_unit, _, _) in zip(instances, before, after):
        if old_unit != new_unit:
            assert main_pid(fleet[name], old_unit) == 0, f"{old_unit} on {name} still runs"
    # The test hosts share one kernel, so their monotonic clocks compare: one at a time, in order.
    start_times = [start for _, _, start in after]
    assert start_times == sorted(start_times), after
    [result] = task_results(fleet[WORKER1], send_tasks(fleet[WORKER1], [("example.add", [1, 2], "celery")]))
    assert result["result"] == 3


def test_a_release_whose_start_canary_fails_stops_the_roll_on_the_first_host(fleet) -> None:
    """site.yml rolls the workers one host at a time: the first host's handover fails with its old slot consuming,
    and the second host is not touched."""

    def running(name: str) -> tuple[str, int]:
        unit = current_unit(fleet[name], "default")
        return unit, main_pid(fleet[name], unit)

    before = {name: running(name) for name in (WORKER1, WORKER2)}
    settings = {name: fingerprint(fleet[name], "/etc/celery") for name in (WORKER1, WORKER2)}
    result = run_playbook(scenario_file("converge.yml"), extra_vars={"celery_worker_start_canary_task": "example.fail"})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-5000:]
    assert f"failed: [{WORKER1}] (item=default " in output, output[-5000:]
    assert "its start canary failed: example.fail failed (RuntimeError: example failure)" in output, output[-5000:]
    assert {name: running(name) for name in (WORKER1, WORKER2)} == before
    assert fingerprint(fleet[WORKER2], "/etc/celery") == settings[WORKER2], "worker2 was rolled"
    ids = send_tasks(fleet[WORKER1], [("example.whoami", [], "celery")] * 4)
    assert {ran["node"] for ran in task_results(fleet[WORKER1], ids)} <= {
        current_node(fleet[WORKER1], "default"),
        current_node(fleet[WORKER2], "default"),
    }

    result = run_playbook(scenario_file("converge.yml"))
    assert result.returncode == 0, result.stdout[-5000:]


# The processes of the collection's service users (celery for workers and beat, celery-flower).
SERVICE_PIDS = "ps -eo pid=,user:32= | awk '$2 ~ /^celery(-flower)?$/ {print $1}'"


@pytest.mark.parametrize("name", [BROKER, WORKER1, WORKER2, BEAT])
def test_no_secret_in_a_service_environment_argument_unit_or_journal(fleet, name: str) -> None:
    """Workers (main and pool processes), beat and Flower get the broker URL and Flower's users as
    systemd credentials: no password in /proc/*/environ, ps, systemctl show/cat or the journal."""
    host = fleet[name]
    pids = host.check_output(SERVICE_PIDS).split()
    assert pids, f"no service process on {name}"
    for pid in pids:
        environ = host.run(f"cat /proc/{pid}/environ")
        assert environ.rc == 0, f"cannot read the environment of {pid}"
        for secret in SECRETS:
            assert secret not in environ.stdout, f"a password is in the environment of {pid} on {name}"
    units = host.check_output("systemctl list-units --all --plain --no-legend 'celery-*' | cut -d' ' -f1").split()
    assert units, f"no celery unit on {name}"
    seen = host.check_output("ps -eo args --no-headers") + host.check_output("journalctl --no-pager -u 'celery-*'")
    for unit in units:
        seen += host.check_output(f"systemctl show {unit}") + host.check_output(f"systemctl cat {unit}")
    for secret in SECRETS:
        assert secret not in seen, f"a password is in ps, the journal or a unit's properties on {name}"


FLOWER_BODY = """
import sys, urllib.request, base64
request = urllib.request.Request(sys.argv[1])
request.add_header("Authorization", "Basic " + base64.b64encode(sys.stdin.read().encode()).decode())
with urllib.request.urlopen(request, timeout=10) as response:
    print(response.read().decode())
"""


@pytest.mark.parametrize("page", ["api/workers", "broker", "workers"])
def test_flower_shows_no_broker_password(fleet, page: str) -> None:
    url = f"http://127.0.0.1:5555/flower/{page}"
    command = (
        f"printf %s {shlex.quote(f'{FLOWER_USER}:{FLOWER_PASSWORD}')} | python3 -c {shlex.quote(FLOWER_BODY)} {url}"
    )
    body = fleet[BROKER].check_output(command)
    assert "rc-site-" in body or "redis" in body, body[:2000]
    for secret in SECRETS:
        assert secret not in body


# systemd-analyze security's exposure (0-10) as --threshold takes it (x10): what the units score
# on Debian 12 and 13 today (docs/security.md; each run records its figures).
EXPOSURE_THRESHOLD = 12


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        (WORKER1, "celery-worker@default.service"),
        (WORKER1, "celery-worker-b@default.service"),
        (BEAT, "celery-beat.service"),
        (BROKER, "celery-flower.service"),
    ],
)
def test_every_unit_passes_the_exposure_gate(fleet, name: str, unit: str) -> None:
    result = fleet[name].run(f"systemd-analyze security --no-pager --threshold={EXPOSURE_THRESHOLD} {unit}")
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    record_figures("site-exposure", f"systemd-analyze security {unit}: {exposure.group(1) if exposure else '?'}")
    assert result.rc == 0, result.stdout[-3000:]
