"""The host_lock action plugin: who this run is, and when a holder on this controller is gone. Its module runs
in-process on a lock directory under tmp_path."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import time
from pathlib import Path
from unittest.mock import MagicMock

import pytest
from ansible.errors import AnsibleActionFail
from ansible.module_utils.testing import patch_module_args
from ansible_collections.reliable.celery.plugins.action import host_lock as action_module
from ansible_collections.reliable.celery.plugins.module_utils import _host_lock
from ansible_collections.reliable.celery.plugins.modules import host_lock as lock_module

# This test process stands for the ansible-playbook process of "this run"; its parent for another live run.
THIS_RUN = os.getpid()
LIVE_RUN = os.getppid()


def finished_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen(["true"])  # noqa: S607 - a test helper
    process.wait()
    return process.pid


class Run:
    """The action plugin as one run on this controller: each call runs a task with these arguments."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch, pid: int = THIS_RUN) -> None:
        self.directory = directory
        self.pid = pid
        self.monkeypatch = monkeypatch
        self.warnings: list[str] = []
        self.module_calls: list[dict] = []
        self.identity = action_module.run_identity(pid)

    def execute_module(self, module_name: str, module_args: dict, task_vars: dict) -> dict:
        assert module_name == "reliable.celery.host_lock"
        self.module_calls.append(module_args)
        output = io.StringIO()
        with patch_module_args(module_args), contextlib.redirect_stdout(output), pytest.raises(SystemExit):
            lock_module.main()
        return json.loads(output.getvalue())

    def task(self, **args: object) -> dict:
        # The plugin runs in a worker forked by ansible-playbook: the run is its parent.
        self.monkeypatch.setattr(action_module.os, "getppid", lambda: self.pid)
        task = MagicMock(args={"path": str(self.directory), **args}, async_val=0, check_mode=False)
        plugin = action_module.ActionModule(task, MagicMock(), MagicMock(), None, None, None)
        plugin._execute_module = self.execute_module
        plugin._display = MagicMock(warning=self.warnings.append)
        return plugin.run(task_vars={"inventory_hostname": "worker-1"})


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "lock"


def write_holder(directory: Path, identity: dict, renewed: float | None = None) -> dict:
    record = _host_lock.new_record(identity, None, (_host_lock.ACQUIRE, ""), renewed or time.time(), 3600)
    directory.mkdir(mode=0o700)
    (directory / "holder.json").write_text(json.dumps(record))
    return record


def test_the_run_is_the_process_with_its_start(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    identity = Run(directory, monkeypatch).identity
    assert identity["pid"] == THIS_RUN
    assert identity["pid_start"] == action_module.process_start(THIS_RUN) != ""
    assert identity["controller"]
    assert identity["user"]
    started = time.mktime(time.strptime(identity["started"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert time.time() - 3600 < started <= time.time() + 1


def test_a_process_that_exited_has_no_start() -> None:
    assert action_module.process_start(finished_pid()) == ""


def test_a_free_host_is_taken_and_released(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    run = Run(directory, monkeypatch)
    result = run.task()
    assert (result.get("failed"), result["acquired"], result["action"]) == (None, True, "acquire")
    assert result["holder"]["id"] == _host_lock.identity_id(run.identity)
    assert run.task()["action"] == "renew"
    assert run.task(state="released")["action"] == "release"
    assert not (directory / "holder.json").exists()


def test_a_second_run_fails_at_once_naming_the_holder(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    # The holder: a process that runs (pytest's parent), on this controller.
    holder = action_module.run_identity(LIVE_RUN)
    record = write_holder(directory, dict(holder, user="alice"))
    result = Run(directory, monkeypatch).task()
    assert result["failed"]
    assert result["msg"] == (
        "Another run of the reliable.celery roles holds worker-1: ansible-playbook pid %d of user alice on "
        "controller %s, started %s; %s. This run stops here on that host; run it again once that one is over. If "
        "that run is gone (interrupted on another controller), wait for the end of its lease or remove "
        "%s/holder.json on the host."
        % (
            holder["pid"],
            holder["controller"],
            holder["started"],
            _host_lock.describe(record).split("; ", 1)[1],
            directory,
        )
    )
    assert json.loads((directory / "holder.json").read_text()) == record


def test_a_holder_whose_process_is_gone_is_taken_over(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    gone = action_module.run_identity(os.getpid())  # this controller's fields
    gone.update(pid=finished_pid(), pid_start="12345")
    record = write_holder(directory, gone)
    run = Run(directory, monkeypatch)
    result = run.task()
    assert (result.get("failed"), result["action"]) == (None, "take_over")
    assert [call.get("take_over") for call in run.module_calls] == [None, record["id"]]
    assert run.warnings == [
        "Took over the lock on worker-1 from %s: its ansible-playbook process no longer runs on the controller."
        % _host_lock.describe(record)
    ]


def test_a_holder_whose_pid_now_runs_another_process_is_taken_over(
    monkeypatch: pytest.MonkeyPatch, directory: Path
) -> None:
    reused = dict(action_module.run_identity(LIVE_RUN), pid_start="1")
    write_holder(directory, reused)
    assert Run(directory, monkeypatch).task()["action"] == "take_over"


def test_a_holder_on_another_controller_waits_for_its_lease(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    elsewhere = dict(action_module.run_identity(os.getpid()), controller="ci-runner-7", pid=finished_pid())
    write_holder(directory, elsewhere)
    run = Run(directory, monkeypatch)
    result = run.task()
    assert result["failed"]
    assert "on controller ci-runner-7" in result["msg"]
    assert len(run.module_calls) == 1


def test_a_run_that_lost_its_lock_fails_on_release(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    run = Run(directory, monkeypatch)
    run.task(lease_seconds=1)
    record = json.loads((directory / "holder.json").read_text())
    record["renewed"] -= 2  # the lease ended
    (directory / "holder.json").write_text(json.dumps(record))
    other = Run(directory, monkeypatch, pid=LIVE_RUN)
    assert other.task()["action"] == "take_over"
    result = run.task(state="released")
    assert result["failed"]
    assert result["msg"].startswith("This run's lock on worker-1 was taken over (its lease ended at ")
    assert "Both runs may have changed the host" in result["msg"]
    assert run.task()["msg"].startswith("This run's lock on worker-1 was taken over (its lease ended at ")


def test_holder_and_take_over_are_the_plugins_to_set(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    with pytest.raises(AnsibleActionFail, match="Invalid options"):
        Run(directory, monkeypatch).task(take_over="x")
