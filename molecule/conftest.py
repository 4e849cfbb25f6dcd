"""Helpers shared by every scenario's testinfra tests (pytest loads this for molecule/*/tests)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import testinfra

T = TypeVar("T")
# The task ids of the start canaries (roles/celery_base/files/reliable_celery_app.py).
START_CANARY_PREFIX = "start-canary-"


def unit_properties(host, unit: str, *names: str) -> dict[str, str]:
    """`systemctl show` properties of a unit as a dict."""
    args = " ".join(f"--property={name}" for name in names)
    output = host.check_output(f"systemctl show --no-pager {args} -- {unit}")
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def journal(host, unit: str, lines: int = 50) -> str:
    """The unit's last journal lines, for assertion messages."""
    return host.run(f"journalctl --no-pager -n {lines} -u {unit}").stdout


def wait_for(condition: Callable[[], T], timeout: float, what: str | Callable[[], str], interval: float = 0.5) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` (or what it returns then) after
    `timeout` s.
    Each poll of a test host is a command through its channel (scripts/testhost-docker/docker), about
    45 ms of CPU: polling faster would take a core from the scenarios running beside it. Times the
    tests assert on come from the hosts' own records, not from when a poll saw them."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


# --- Running Ansible from a test (a converge with other variables, check mode, bad input) ---


def run_playbook(
    playbook: Path, *options: str, extra_vars: dict | None = None, json_output: bool = False
) -> subprocess.CompletedProcess:
    """Run `playbook` against the scenario's hosts; molecule's environment reaches the verifier.
    With JSON_OUTPUT, stdout is the json callback's document (ansible.posix.json)."""
    command = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook), *options]
    if extra_vars is not None:
        command += ["-e", json.dumps(extra_vars)]
    environment = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"} if json_output else None
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=1200, env=environment)


def recap(result: subprocess.CompletedProcess, host_name: str) -> dict[str, int]:
    """The PLAY RECAP counts (ok, changed, failed, ...) of one host."""
    match = re.search(rf"^{re.escape(host_name)}\s+:\s+(.*)$", result.stdout, re.MULTILINE)
    assert match, f"no PLAY RECAP line for {host_name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def scenario_host(name: str):
    """A testinfra host of the scenario's inventory by name, for tests that span several hosts."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def scenario_file(name: str) -> Path:
    return Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / name


def shared_playbook(name: str) -> Path:
    """A playbook the scenarios share (molecule/resources/playbooks)."""
    return Path(__file__).parent / "resources" / "playbooks" / name


# --- Celery workers deployed by the celery_worker role ---


def record_figures(report: str, line: str) -> None:
    """Figures, not assertions: appended to .cache/molecule-logs/REPORT.txt with the time, the suite
    and the broker of the run."""
    path = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / ".cache" / "molecule-logs" / f"{report}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} {SUITE} ({os.environ.get('CHAOS_BROKER') or REDIS_SERVER}): {line}\n"
        )


def service_memory_mib(host, unit: str) -> float:
    """The resident memory of every process of UNIT on HOST, in MiB: what a broker costs a host."""
    rows = [line.split() for line in host.check_output("ps -e -o unit=,rss=").splitlines()]
    return sum(int(row[1]) for row in rows if len(row) == 2 and row[0] == unit) / 1024


# The Redis-protocol broker server of the scenarios that follow the suite (scripts/molecule.sh,
# TESTHOST_REDIS_SERVER, mapped to TEST_REDIS_SERVER in their molecule.yml): Redis or Valkey, laid
# out by Debian under the server's name.
REDIS_SERVER = os.environ.get("TEST_REDIS_SERVER") or "redis"
REDIS_CLI = f"{REDIS_SERVER}-cli"
REDIS_SERVICE = f"{REDIS_SERVER}-server.service"
REDIS_CONFIG_DIR = f"/etc/{REDIS_SERVER}"
# The celery_broker role's own Redis administrator: its password is in a root-only file.
REDIS_ADMIN = "celery-broker-admin"
REDIS_ADMIN_SECRET = f"{REDIS_CONFIG_DIR}/{REDIS_ADMIN}.secret"
# The Debian suite of the scenario's hosts (scripts/molecule.sh).
SUITE = os.environ.get("TESTHOST_SUITE", "bookworm")


def redis_cli(host, *args: str, user: str | None = REDIS_ADMIN, password: str | None = None):
    """redis-cli (valkey-cli) on the broker HOST as USER: the broker role's administrator by default
    (the workers' user may not administer), with PASSWORD or else the administrator's secret; None: no login."""
    if user is None:
        return host.run(f"{REDIS_CLI} {shlex.join(args)}")
    secret = f'"$(cat {REDIS_ADMIN_SECRET})"' if password is None else shlex.quote(password)
    login = f"--no-auth-warning --user {shlex.quote(user)}"
    return host.run(f"REDISCLI_AUTH={secret} {REDIS_CLI} {login} {shlex.join(args)}")


# What the roles manage on a host; a run that must change nothing leaves this unchanged.
MANAGED_PATHS = "/etc/celery /etc/systemd/system /opt/celery /var/lib/celery /etc/redis /etc/valkey /etc/rabbitmq"


def fingerprint(host, paths: str = MANAGED_PATHS) -> str:
    """A digest of the names, sizes, modes, owners and times of everything the roles manage."""
    return host.check_output(f"find {paths} -printf '%p %s %m %u %T@\\n' 2>/dev/null | sort | sha256sum")


CONFIG_DIR = "/etc/celery"
# molecule/default/converge.yml's worker instances, for tests that converge with them changed.
DEFAULT_SCENARIO_INSTANCES = [
    {"name": "default", "queues": ["celery"], "concurrency": 2},
    {
        "name": "reports",
        "app": "reliable_celery_example.plain:app",
        "queues": ["reports", "slow"],
        "concurrency": 1,
        "max_tasks_per_child": 100,
        "memory_high": "768M",
        "memory_max": "1G",
        "extra_args": ["--without-mingle", "--without-gossip"],
        "environment": {"REPORTS_ONLY": "1"},
    },
]
RELEASES_DIR = "/opt/celery/releases"


# Every credential of the workers, the role's (broker_url, result_backend) and the app's: a shell
# word list of systemd-run options, one LoadCredential= per file of the role's directory.
WORKER_CREDENTIALS = (
    f"$(for file in {CONFIG_DIR}/credentials/worker/*; do "
    'printf "%s\\n" "--property=LoadCredential=${file##*/}:$file"; done)'
)


def in_worker_environment(instance: str, argv: list[str], *, unit: str = "", output: str = "") -> str:
    """A command line running `argv` as the service user with the instance's environment files and
    credentials, read by systemd exactly as the unit reads them. It waits for `argv` and prints its
    output; with UNIT it starts it as that transient unit and returns, its output to the file OUTPUT."""
    how = ["--pipe", "--wait", "--collect"] if not unit else [f"--unit={unit}", "-p", f"StandardOutput=file:{output}"]
    systemd_run = [
        "systemd-run", "--quiet", *how,
        "-p", "User=celery",
        "-p", f"EnvironmentFile={CONFIG_DIR}/worker.env",
        "-p", f"EnvironmentFile={CONFIG_DIR}/worker-instances/{instance}.env",
    ]  # fmt: skip
    return f"{shlex.join(systemd_run)} {WORKER_CREDENTIALS} {shlex.join(argv)}"


def celery(host, instance: str, *args: str):
    """`celery -A reliable_celery_app ARGS` as the instance's worker would see its configuration."""
    argv = ["/opt/celery/current/bin/celery", "-A", "reliable_celery_app", *args]
    return host.run(in_worker_environment(instance, argv))


def run_with_output(host, command: str, what: str):
    """Run COMMAND on the host with its stdout in a file there; the result and that output. A
    `docker exec` can return rc 0 and none of the output of a command that printed it: seen once
    under load, in the restart scenario (moby/moby#27289 describes the same loss). The command runs
    once (a sender must not send twice); reading its file again is harmless."""
    path = f"/root/test-output-{uuid.uuid4().hex}"
    result = host.run(f"{command} > {path}")
    try:
        if result.rc != 0:
            return result, ""

        def written() -> str:
            return host.run(f"cat {path}").stdout.strip()

        return result, wait_for(written, 10, f"{what} in {path}")
    finally:
        host.run(f"rm -f {path}")


SEND_TASK = """
import json, sys
from reliable_celery_app import app
name, args, queue, timeout = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] or None, float(sys.argv[4])
result = app.send_task(name, args=args, queue=queue)
print(json.dumps(result.get(timeout=timeout)))
"""


def call_task(host, name: str, args: list | None = None, *, queue: str = "", timeout: float = 60):
    """Send a task through the real broker and return its result from the result backend."""
    instance = "default"  # any instance's environment reaches the broker
    argv = ["/opt/celery/current/bin/python", "-c", SEND_TASK, name, json.dumps(args or []), queue, str(timeout)]
    result, output = run_with_output(host, in_worker_environment(instance, argv), f"task {name}'s result")
    assert result.rc == 0, f"task {name} failed: {result.stderr}\n{journal(host, current_unit(host, instance))}"
    return json.loads(output.splitlines()[-1])


def main_pid(host, unit: str) -> int:
    return int(unit_properties(host, unit, "MainPID")["MainPID"])


# An instance's two slots (celery_worker's __celery_worker_slots): unit prefix and node/runtime suffix.
SLOTS = (("celery-worker@", ""), ("celery-worker-b@", ".b"))


def current_slot(host, instance: str) -> tuple[str, str]:
    """The unit and the readiness marker of the instance's current slot (the one enabled for boot)."""
    for prefix, suffix in SLOTS:
        unit = f"{prefix}{instance}.service"
        if host.run(f"systemctl is-enabled --quiet {unit}").rc == 0:
            return unit, f"/run/celery/worker-{instance}{suffix}/ready"
    raise AssertionError(f"no slot of {instance} is enabled")


def current_unit(host, instance: str) -> str:
    return current_slot(host, instance)[0]


def readiness(host, instance: str) -> dict:
    """The readiness marker of the instance's current slot if its running main process wrote it, else {}."""
    unit, marker = current_slot(host, instance)
    pid = main_pid(host, unit)
    record = json.loads(host.run(f"cat {marker}").stdout or "{}")
    return record if pid != 0 and record.get("pid") == pid else {}


def current_node(host, instance: str) -> str:
    """The Celery node name of the instance's current slot."""
    unit = current_unit(host, instance)
    suffix = next(suffix for prefix, suffix in SLOTS if unit.startswith(prefix))
    return f"{instance}{suffix}@{host.check_output('hostname')}"


SEND_TASKS = """
import json, sys
from reliable_celery_app import app
for name, args, queue, options in json.loads(sys.argv[1]):
    app.send_task(name, args=args, queue=queue or None, **options)
"""


def send_tasks(host, tasks: list[tuple]) -> list[str]:
    """Send (name, args, queue[, options]) tasks without waiting for them; return their ids in order.
    OPTIONS are send_task's, such as {"countdown": 30}. The ids are chosen here, not read from the
    sender's output: `systemd-run --wait` can return while its command still runs when systemd reloads
    (a handover enables one slot and disables the other), and the output then comes too late (seen under
    load in the restart scenario; systemd/systemd#27204 describes it for a re-exec)."""
    ids = [str(uuid.uuid4()) for _ in tasks]
    payload = [
        [name, args, queue, {**(options[0] if options else {}), "task_id": task_id}]
        for (name, args, queue, *options), task_id in zip(tasks, ids, strict=True)
    ]
    argv = ["/opt/celery/current/bin/python", "-c", SEND_TASKS, json.dumps(payload)]
    result = host.run(in_worker_environment("default", argv))
    assert result.rc == 0, result.stderr
    return ids


def task_events(host, instance: str = "default") -> list[dict]:
    """The example app's independent record of task starts and ends (EXAMPLE_TASK_EVENTS=1), less the start
    canaries each worker runs before it consumes its queues."""
    events = host.file(f"/var/lib/celery/worker-{instance}/task-events.jsonl")
    lines = events.content_string.splitlines() if events.exists else []
    return [event for event in map(json.loads, lines) if not event["id"].startswith(START_CANARY_PREFIX)]


def started_ids(host, instance: str = "default") -> set[str]:
    """The ids of the tasks that started on the instance (task_events)."""
    return {event["id"] for event in task_events(host, instance) if event["event"] == "start"}


def starts_and_ends(events: list[dict], task_ids: list[str]) -> dict[str, dict[str, list[dict]]]:
    wanted = set(task_ids)
    by_id: dict[str, dict[str, list[dict]]] = {task_id: {"start": [], "end": []} for task_id in task_ids}
    for event in events:
        if event["id"] in wanted:
            by_id[event["id"]][event["event"]].append(event)
    return by_id


WAIT_RESULTS = """
import json, sys
from reliable_celery_app import app
timeout = float(sys.argv[2])
print(json.dumps([app.AsyncResult(task_id).get(timeout=timeout) for task_id in json.loads(sys.argv[1])]))
"""


def task_results(host, task_ids: list[str], timeout: float = 60) -> list:
    """Wait for the results of tasks sent earlier."""
    argv = ["/opt/celery/current/bin/python", "-c", WAIT_RESULTS, json.dumps(task_ids), str(timeout)]
    result = host.run(in_worker_environment("default", argv))
    assert result.rc == 0, f"{result.stderr}\n{journal(host, current_unit(host, 'default'))}"
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Hung workers, which systemd's watchdog replaces (celery_worker_watchdog_seconds) ---

BROADCAST = """
import json, sys
from reliable_celery_app import app
app.control.broadcast(sys.argv[1], arguments=json.loads(sys.argv[2]), destination=[sys.argv[3]], reply=False)
"""


def broadcast(host, instance: str, command: str, **arguments) -> str:
    """A shell command that sends a remote-control COMMAND to the instance's current node, without
    waiting for a reply."""
    argv = ["/opt/celery/current/bin/python", "-c", BROADCAST, command, json.dumps(arguments)]
    return in_worker_environment(instance, [*argv, current_node(host, instance)])


# Faults that stop a worker working while its process lives, each the shell commands that make it hang
# and undo it on its host ($PID: the worker's main process): SIGSTOP of the main process, the example
# app's remote-control command blocking its main thread, its consumer of the queue `celery` cancelled.
WATCHDOG_FAULTS = ("freeze-main", "block-main", "cancel-consumer")


def hang_commands(host, instance: str, fault: str) -> tuple[str, str]:
    if fault == "freeze-main":
        return "kill -STOP $PID", "kill -CONT $PID"
    if fault == "block-main":
        return broadcast(host, instance, "example_block_main_thread", seconds=120), ""
    if fault == "cancel-consumer":
        return broadcast(host, instance, "cancel_consumer", queue="celery"), ""
    raise ValueError(f"not a watchdog fault: {fault}; one of {WATCHDOG_FAULTS}")


def hang_until_replaced(host, instance: str, fault: str, timeout: float = 60) -> dict[str, float]:
    """Make the instance's ready worker stop working with FAULT (one of WATCHDOG_FAULTS), wait until
    systemd's watchdog has aborted it and started a new process, and undo the fault whatever
    happened. Returns the host's times: when the fault struck ("hung"), the journal's "Watchdog
    timeout" ("aborted"), and the new process's readiness ("ready")."""
    hang, undo = hang_commands(host, instance, fault)
    unit = current_unit(host, instance)
    pid = wait_for(lambda: readiness(host, instance).get("pid"), 60, f"{unit} ready")
    since = host.check_output("date +%s")
    hung = float(host.check_output(f"PID={pid}; {hang} && date +%s.%N"))
    try:
        wait_for(lambda: main_pid(host, unit) not in (0, pid), timeout, f"the watchdog to replace {unit}")
    finally:
        if undo:
            host.run(f"PID={pid}; {undo}")
    aborted = watchdog_abort(host, unit, since)
    ready = wait_for(lambda: readiness(host, instance), 120, f"{unit} ready again")
    return {"hung": hung, "aborted": aborted, "ready": ready["ready_at"]}


def watchdog_abort(host, unit: str, since: str) -> float:
    """The host's time of the unit's first "Watchdog timeout" journal entry since SINCE (epoch seconds);
    fails if there is none."""
    entries = [
        json.loads(line) for line in host.check_output(f"journalctl -u {unit} -o json --since @{since}").splitlines()
    ]
    aborted = next(
        (int(e["__REALTIME_TIMESTAMP"]) / 1e6 for e in entries if "Watchdog timeout" in str(e.get("MESSAGE"))), None
    )
    assert aborted is not None, f"{unit} was replaced, but not by its watchdog:\n{journal(host, unit)}"
    return aborted


def freeze_broker_until_replaced(container: str, broker, workers: list, instance: str, seconds: float) -> dict:
    """Freeze the broker host CONTAINER (docker pause) for SECONDS: the WORKERS' connections stay up while
    nothing comes through them, until systemd's watchdog replaces each (its canary goes unanswered, or a
    Redis command blocks its event loop). Returns the times: "frozen", "thawed", and per worker, in order,
    its watchdog's abort ("aborted") and its new process's readiness once the broker is back ("ready")."""
    units = [current_unit(host, instance) for host in workers]
    pids = [main_pid(host, unit) for host, unit in zip(workers, units, strict=True)]
    since = broker.check_output("date +%s")
    subprocess.run(["docker", "pause", container], check=True, capture_output=True, timeout=60)
    frozen = time.time()
    try:
        for host, unit, pid in zip(workers, units, pids, strict=True):
            replaced = lambda host=host, unit=unit, pid=pid: main_pid(host, unit) not in (0, pid)  # noqa: E731
            wait_for(replaced, 60, f"the watchdog to replace {unit} on {host.backend.get_hostname()}")
    finally:
        time.sleep(max(0.0, frozen + seconds - time.time()))
        subprocess.run(["docker", "unpause", container], check=True, capture_output=True, timeout=60)
        thawed = time.time()
    return {
        "frozen": frozen,
        "thawed": thawed,
        "aborted": [watchdog_abort(host, unit, since) for host, unit in zip(workers, units, strict=True)],
        "ready": [
            wait_for(lambda host=host: readiness(host, instance), 180, f"{unit} ready again")["ready_at"]
            for host, unit in zip(workers, units, strict=True)
        ],
    }
