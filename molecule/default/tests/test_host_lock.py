"""The host lock (docs/host-lock.md): one ansible-playbook run at a time changes a host. A second run fails at
once naming the first; a run whose ansible-playbook process is gone, or whose lease ended, is taken over."""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import current_unit, recap, run_playbook, scenario_file, send_tasks, wait_for

RECORD = "/run/reliable-celery/lock/holder.json"
# An environment change restarts every instance (the worker role's handler); a task running on the
# default instance keeps its handover draining meanwhile, so that the run holds the lock in its handler.
CHANGED = {"celery_worker_environment": {"EXAMPLE_API_TOKEN": "t", "LOCK_TEST": "1"}}
TASK_SECONDS = 60


def holder(host) -> dict | None:
    record = host.run(f"cat {RECORD}")
    return json.loads(record.stdout) if record.rc == 0 else None


class Background:
    """ansible-playbook in the background; its output lines as they come."""

    def __init__(self, playbook: Path, extra_vars: dict | None = None) -> None:
        command = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook)]
        if extra_vars is not None:
            command += ["-e", json.dumps(extra_vars)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.pid = self.process.pid
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def printed(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        returncode = self.process.wait(timeout)
        self.reader.join(10)
        return returncode, "".join(self.lines)


def held_by(host, run: Background) -> dict:
    """Wait until RUN holds the host; its record."""
    return wait_for(lambda: (holder(host) or {}).get("pid") == run.pid and holder(host), 300, f"pid {run.pid} to lock")


def failure_message(result: subprocess.CompletedProcess) -> str:
    """The failed task's result and error, whitespace collapsed (results may span lines; under molecule the
    failure goes to stderr)."""
    failed = result.stdout[result.stdout.find("fatal:") :].split("PLAY RECAP")[0]
    return " ".join((failed + "\n" + result.stderr).split())


@pytest.fixture
def restore_converge():
    """Converge back to converge.yml's own variables after the test."""
    yield
    result = run_playbook(scenario_file("converge.yml"))
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.usefixtures("restore_converge")
def test_a_second_run_fails_at_once_naming_the_run_that_restarts_the_workers(host) -> None:
    old_slot = current_unit(host, "default")
    first = Background(scenario_file("converge.yml"), CHANGED)
    try:
        # The handler hands the default instance over and waits until the old slot has finished this task.
        handler = (
            "RUNNING HANDLER [reliable.celery.celery_worker : Restart the celery workers that run a stale generation,"
            " gracefully]"
        )
        wait_for(lambda: first.printed(handler), 600, "the first run's restart handler")
        send_tasks(host, [("example.sleep", [TASK_SECONDS], "celery")])
        wait_for(lambda: _deactivating(host, old_slot), 300, f"{old_slot} to drain, in the first run's handler")
        record = held_by(host, first)
        started = time.monotonic()
        second = run_playbook(scenario_file("converge.yml"), extra_vars=CHANGED)
        took = time.monotonic() - started
        assert first.process.poll() is None, "the first run ended before the second one was refused"
    finally:
        returncode, output = first.finish()
    assert second.returncode == 2, second.stdout[-4000:]
    message = failure_message(second)
    assert "Another run of the reliable.celery roles holds" in message
    for what in (
        f"ansible-playbook pid {first.pid} of user {getpass.getuser()}",
        f"on controller {socket.gethostname()}",
        f"started {record['started']}",
    ):
        assert what in message, message
    assert recap(second, host.backend.get_hostname())["changed"] == 0
    print(f"second run refused after {took:.1f} s")
    assert returncode == 0, output[-4000:]
    # Finished, the first run left the host free: the same run again is green and changes nothing.
    assert holder(host) is None
    again = run_playbook(scenario_file("converge.yml"), extra_vars=CHANGED)
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again, host.backend.get_hostname())["changed"] == 0


def _deactivating(host, unit: str) -> bool:
    return host.run(f"systemctl is-active {unit}").stdout.strip() == "deactivating"


HOLD = """
- name: Hold the host like a role, then wait on the controller
  hosts: all
  gather_facts: false
  tasks:
    - name: Take the lock as every role does
      ansible.builtin.include_role:
        name: reliable.celery.celery_base
        tasks_from: lock
    - name: Wait until interrupted
      ansible.builtin.pause:
        minutes: 10
"""


@pytest.mark.usefixtures("no_record_left")
def test_the_lock_of_an_interrupted_run_is_taken_over(host, tmp_path: Path) -> None:
    playbook = tmp_path / "hold.yml"
    playbook.write_text(HOLD)
    interrupted = Background(playbook)
    record = held_by(host, interrupted)
    interrupted.process.send_signal(signal.SIGINT)  # Ctrl-C; the pause asks for a second one
    try:
        interrupted.process.wait(10)
    except subprocess.TimeoutExpired:
        interrupted.process.send_signal(signal.SIGINT)
    interrupted.finish(60)
    assert holder(host) == record, "the interrupted run was expected to leave its record behind"

    result = run_playbook(scenario_file("converge.yml"))
    assert result.returncode == 0, result.stdout[-4000:]
    said = " ".join((result.stdout + result.stderr).split())  # warnings are wrapped
    assert f"Took over the lock on {host.backend.get_hostname()} from ansible-playbook pid {interrupted.pid}" in said
    assert "its ansible-playbook process no longer runs on the controller" in said
    assert holder(host) is None


def write_record(host, **fields: object) -> None:
    """A lock record as a run on another controller leaves it."""
    record = {"id": "elsewhere-1", "controller": "ci-runner-7", "pid": 4242, "user": "deploy", "pid_start": "9"}
    record.update(fields)
    host.run(f"mkdir -p -m 0700 {Path(RECORD).parent} && echo '{json.dumps(record)}' > {RECORD}")


def broker_run(*options: str) -> subprocess.CompletedProcess:
    """The broker role as the scenario's prepare applied it: its run takes the lock after its checks too."""
    variables = {"test_role": "reliable.celery.celery_broker", "celery_broker_password": "Broker-Secret-7f3a-0d2c9e"}
    return run_playbook(scenario_file("role_only.yml"), *options, extra_vars=variables)


@pytest.fixture
def no_record_left(host):
    """A record written by a test never outlives it: later tests would find the host held."""
    yield
    host.run(f"rm -f {RECORD}")


@pytest.mark.usefixtures("no_record_left")
def test_a_run_on_another_controller_is_waited_for_until_its_lease_ends(host) -> None:
    write_record(host, taken=time.time(), renewed=time.time(), lease_seconds=600)
    refused = broker_run()
    assert refused.returncode == 2, refused.stdout[-4000:]
    assert "ansible-playbook pid 4242 of user deploy on controller ci-runner-7" in failure_message(refused)

    write_record(host, taken=time.time() - 700, renewed=time.time() - 700, lease_seconds=600)
    result = broker_run()
    assert result.returncode == 0, result.stdout[-4000:]
    assert "its lease ended at" in " ".join((result.stdout + result.stderr).split())
    assert recap(result, host.backend.get_hostname())["changed"] == 0
    assert holder(host) is None


@pytest.mark.usefixtures("no_record_left")
def test_check_mode_reads_the_lock_and_writes_none(host) -> None:
    write_record(host, taken=time.time(), renewed=time.time(), lease_seconds=600)
    refused = broker_run("--check")
    assert refused.returncode == 2, refused.stdout[-4000:]
    assert "on controller ci-runner-7" in failure_message(refused)
    host.run(f"rm -rf {Path(RECORD).parent.parent}")
    checked = broker_run("--check")
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert not host.file(str(Path(RECORD).parent.parent)).exists
