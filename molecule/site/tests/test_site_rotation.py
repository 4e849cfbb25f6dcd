"""The broker's Redis users: a password rotation through site.yml while tasks flow, then what the
clients may not do. Runs after test_site.py (file order): it changes the fleet's passwords."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import (
    REDIS_CONFIG_DIR,
    REDIS_SERVER,
    REDIS_SERVICE,
    in_worker_environment,
    recap,
    record_figures,
    run_playbook,
    scenario_host,
    task_events,
    task_results,
    wait_for,
)
from test_site import BEAT, BROKER, REDIS_PASSWORDS, WORKER1, WORKER2, redis_cli

SITE = Path(__file__).parents[3] / "playbooks" / "site.yml"
NEW_PASSWORDS = {name: f"{password[:-1]}/rotated?#@%" for name, password in REDIS_PASSWORDS.items()}
# Generous: a handover leaves a worker host without a consuming process for under a second.
MAX_CONSUMING_GAP_SECONDS = 20.0
CONFIG_DIGESTS = f"sha256sum {REDIS_CONFIG_DIR}/users.acl {REDIS_CONFIG_DIR}/{REDIS_SERVER}.conf"
PRODUCER_UNIT = "rc-rotation-producer"
PRODUCER_OUTPUT = "/tmp/rc-rotation-producer.json"  # noqa: S108 - a test host's file
PRODUCER_STOP = "/tmp/rc-rotation-producer.stop"  # noqa: S108

# Sends example.add every 0.1 s until the stop file appears; prints the ids and any send error.
PRODUCER = """
import json, os, sys, time
from reliable_celery_app import app
ids, errors, number = [], [], 0
deadline = time.monotonic() + 900
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    try:
        ids.append([number, app.send_task("example.add", args=[number, number], queue="celery").id])
    except Exception as error:
        errors.append(type(error).__name__)
    number += 1
    time.sleep(0.1)
print(json.dumps({"ids": ids, "errors": errors}))
"""


@pytest.fixture(scope="module")
def fleet() -> dict:
    return {name: scenario_host(name) for name in (BROKER, WORKER1, WORKER2, BEAT)}


def users(passwords: dict[str, list[str]]) -> list[dict]:
    return [{"name": name, "role": name, "passwords": passwords[name]} for name in ("worker", "beat", "flower")]


def start_producer(host) -> None:
    host.run(f"rm -f {PRODUCER_STOP} {PRODUCER_OUTPUT}; systemctl reset-failed {PRODUCER_UNIT}")
    argv = ["/opt/celery/current/bin/python", "-c", PRODUCER, PRODUCER_STOP]
    host.check_output(in_worker_environment("default", argv, unit=PRODUCER_UNIT, output=PRODUCER_OUTPUT))


def stop_producer(host) -> dict:
    host.check_output(f"touch {PRODUCER_STOP}")
    wait_for(lambda: host.run(f"systemctl is-active {PRODUCER_UNIT}").stdout.strip() != "active", 60, "the producer")
    return json.loads(host.file(PRODUCER_OUTPUT).content_string)


def largest_gaps(fleet, since: float, until: float) -> dict[str, float]:
    """Per worker host, the longest time in [since, until] without a task starting there."""
    gaps = {}
    for name in (WORKER1, WORKER2):
        starts = sorted(e["t"] for e in task_events(fleet[name]) if e["event"] == "start" and since <= e["t"] <= until)
        points = [since, *starts, until]
        gaps[name] = max(b - a for a, b in zip(points, points[1:]))
    return gaps


def rotate_step(fleet, passwords: dict[str, list[str]]) -> tuple[dict, dict[str, float]]:
    worker1 = fleet[WORKER1]
    start_producer(worker1)
    since = time.time()
    result = run_playbook(SITE, extra_vars={"celery_broker_redis_users": users(passwords)})
    until = time.time()
    sent = stop_producer(worker1)
    assert result.returncode == 0, result.stdout[-5000:]
    for secret in [*REDIS_PASSWORDS.values(), *NEW_PASSWORDS.values()]:
        assert secret not in result.stdout + result.stderr
    assert sent["errors"] == [], f"the producer could not send: {sent['errors'][:10]}"
    results = task_results(worker1, [task_id for _number, task_id in sent["ids"]], timeout=120)
    assert [r["result"] for r in results] == [2 * number for number, _task_id in sent["ids"]], "tasks were lost"
    gaps = largest_gaps(fleet, since, until)
    record_figures(
        "site-rotation",
        f"rotation step: {len(sent['ids'])} tasks sent, 0 lost, site.yml {until - since:.0f} s, "
        + "longest gap without a task start: "
        + ", ".join(f"{name} {gap:.1f} s" for name, gap in gaps.items()),
    )
    return recap(result, BROKER), gaps


def test_a_password_rotation_loses_no_task_and_no_worker_host_stops_consuming(fleet) -> None:
    """Step 1: the broker's users hold the old and the new password; clients roll host by host to
    the new one (the last). Step 2: the old passwords go. Tasks flow all along."""
    broker = fleet[BROKER]
    redis_pid = broker.check_output(f"systemctl show -p MainPID --value {REDIS_SERVICE}")

    both = {name: [REDIS_PASSWORDS[name], NEW_PASSWORDS[name]] for name in REDIS_PASSWORDS}
    _recap, gaps = rotate_step(fleet, both)
    assert max(gaps.values()) < MAX_CONSUMING_GAP_SECONDS, gaps
    for name in REDIS_PASSWORDS:
        for password in both[name]:
            assert redis_cli(broker, "PING", user=name, password=password).stdout.strip() == "PONG"

    _recap, gaps = rotate_step(fleet, {name: [NEW_PASSWORDS[name]] for name in NEW_PASSWORDS})
    assert max(gaps.values()) < MAX_CONSUMING_GAP_SECONDS, gaps
    for name in REDIS_PASSWORDS:
        assert redis_cli(broker, "PING", user=name, password=NEW_PASSWORDS[name]).stdout.strip() == "PONG"
        old = redis_cli(broker, "PING", user=name, password=REDIS_PASSWORDS[name])
        assert "WRONGPASS" in old.stdout + old.stderr
    # Users changed in place: Redis was never restarted.
    assert broker.check_output(f"systemctl show -p MainPID --value {REDIS_SERVICE}") == redis_pid


def test_no_client_was_refused_a_command_key_or_channel(fleet) -> None:
    """Every converge, test and the rotation above ran real workers, beat and Flower against their
    users: Redis's ACL log records any command, key or channel it refused them."""
    log = redis_cli(fleet[BROKER], "--json", "ACL", "LOG", "128")
    assert log.rc == 0, log.stderr
    entries = json.loads(log.stdout or "[]")
    # The client's address names the host it ran on; its name and last command, the process.
    addresses = {host.check_output("hostname -I").split()[0]: name for name, host in fleet.items()}
    addresses["127.0.0.1"] = BROKER
    refused = []
    for entry in entries:
        if entry.get("reason") == "auth":
            continue
        client = dict(field.split("=", 1) for field in entry["client-info"].split() if "=" in field)
        source = addresses.get(client.get("addr", "").rpartition(":")[0], "an unknown host")
        refused.append(
            "{username}: {object} ({reason}, {context}) x{count}, {age-seconds} s ago".format_map(entry)
            + f", from {source}: {entry['client-info']}"
        )
    assert refused == [], "\n".join(refused)


# Run with the worker's own credential file, as a task would: kombu's Redis client.
ATTEMPT = """
import json, redis
from reliable_celery_app import app
client = app.connection().default_channel.client
answers = {"PING": str(client.ping())}
for command in (["CONFIG", "SET", "appendonly", "no"], ["CONFIG", "GET", "requirepass"], ["FLUSHALL"], ["FLUSHDB"],
                ["SHUTDOWN", "NOSAVE"], ["DEBUG", "SLEEP", "0"], ["KEYS", "*"], ["ACL", "LIST"], ["MONITOR"]):
    try:
        client.execute_command(*command)
        answers[" ".join(command)] = "allowed"
    except redis.exceptions.NoPermissionError:
        answers[" ".join(command)] = "NOPERM"
    except redis.exceptions.ResponseError as error:
        answers[" ".join(command)] = str(error)[:40]
print(json.dumps(answers))
"""
# Redis refuses DEBUG to everyone (enable-debug-command no) before it checks the ACL.
DEBUG_REFUSED = "DEBUG command not allowed."


def test_a_task_with_the_workers_credentials_cannot_administer_redis(fleet) -> None:
    attempt = in_worker_environment("default", ["/opt/celery/current/bin/python", "-c", ATTEMPT])
    answers = json.loads(fleet[WORKER1].check_output(attempt).splitlines()[-1])
    assert answers.pop("PING") == "True"
    assert answers.pop("DEBUG SLEEP 0").startswith(("NOPERM", DEBUG_REFUSED[:30]))
    assert set(answers.values()) == {"NOPERM"}, answers
    assert redis_cli(fleet[BROKER], "CONFIG", "GET", "appendonly").stdout.split() == ["appendonly", "yes"]


ADMINISTRATION = [
    ["CONFIG", "SET", "appendonly", "no"],
    ["FLUSHALL"],
    ["SHUTDOWN", "NOSAVE"],
    ["DEBUG", "SLEEP", "0"],
    ["KEYS", "*"],
]


@pytest.mark.parametrize("user", ["worker", "beat", "flower"])
@pytest.mark.parametrize("command", ADMINISTRATION)
def test_no_client_user_may_administer_redis(fleet, user: str, command: list[str]) -> None:
    dry_run = redis_cli(fleet[BROKER], "ACL", "DRYRUN", user, *command).stdout
    assert f"no permissions to run the '{command[0].lower()}" in dry_run, dry_run
    if user != "worker":
        answer = redis_cli(fleet[BROKER], *command, user=user, password=NEW_PASSWORDS[user])
        assert "NOPERM" in answer.stdout or command[0] == "DEBUG", answer.stdout + answer.stderr


def test_the_default_user_is_disabled(fleet) -> None:
    for password in [*REDIS_PASSWORDS.values(), *NEW_PASSWORDS.values()]:
        answer = redis_cli(fleet[BROKER], "PING", user="default", password=password)
        assert "WRONGPASS" in answer.stdout + answer.stderr
    acl = redis_cli(fleet[BROKER], "ACL", "GETUSER", "default").stdout.split()
    assert "off" in acl, acl


def test_replacing_every_password_of_a_user_at_once_is_refused_before_anything_changes(fleet) -> None:
    broker = fleet[BROKER]
    before = broker.check_output(CONFIG_DIGESTS)
    leaked = {**{name: [password] for name, password in NEW_PASSWORDS.items()}, "worker": ["Third-Secret-0123456789/"]}
    result = run_playbook(SITE, extra_vars={"celery_broker_redis_users": users(leaked)})
    assert result.returncode != 0
    refusal = "celery_broker_redis_users replaces every password Redis holds for worker"
    # The failure message goes to stdout or stderr depending on ansible-core's version.
    assert refusal in " ".join((result.stdout + result.stderr).split()), result.stdout[-3000:] + result.stderr[-3000:]
    assert broker.check_output(CONFIG_DIGESTS) == before
    assert redis_cli(broker, "PING", user="worker", password=NEW_PASSWORDS["worker"]).stdout.strip() == "PONG"
