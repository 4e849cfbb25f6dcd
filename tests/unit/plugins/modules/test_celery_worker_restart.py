"""The restart state machine against a simulated systemd: every time-out and race path."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from ansible_collections.reliable.celery.plugins.modules import celery_worker_restart as restart_module

UNIT = "celery-worker@default.service"


class FakeSystemd:
    """A unit with a main process. Time only moves when the module sleeps."""

    def __init__(self, marker: Path, *, running: bool = True, drain_seconds: float = 3.0) -> None:
        self.now = 1000.0
        self.marker = marker
        self.load_state = "loaded"
        self.next_pid = 100
        self.main: int | None = self.next_pid
        self.alive: set[int] = {self.main}
        self.active_state, self.sub_state = "active", "running"
        if not running:
            self.stop()
        self.restart_sec = 5.0  # Restart=always waits this long after a clean exit
        self.restart_due: float | None = None
        self.timeout_stop = "5min"
        self.drain_seconds = drain_seconds  # how long a SIGTERMed main process takes to exit
        self.exit_at: dict[int, float] = {}
        self.ready_delay = 1.5  # worker_ready fires this long after a start
        self.ready_at: dict[int, float] = {}
        self.start_works = True
        self.signals: list[tuple[int, int]] = []
        self.commands: list[list[str]] = []

    # -- what the module calls --
    def run_command(self, args: list[str]) -> tuple[int, str, str]:
        self.commands.append(args)
        verb = args[1] if args[0].endswith("systemctl") else args[0]
        if verb == "show":
            return 0, self.show(), ""
        if verb == "start":
            # systemd holds a start job while the unit waits to auto-restart (service_start: -EAGAIN)
            if self.start_works and self.sub_state != "auto-restart" and self.main not in self.alive:
                self.spawn()
            return 0, "", ""
        if verb == "restart":
            if self.start_works and self.main not in self.alive:
                self.spawn()
            return 0, "", ""
        if verb == "kill":
            self.alive.clear()
            return 0, "", ""
        return 0, "journal lines\n", ""

    def kill(self, pid: int, signum: int) -> None:
        if pid not in self.alive:
            raise ProcessLookupError(pid)
        self.signals.append((pid, signum))
        self.exit_at[pid] = self.now + self.drain_seconds

    def running(self, pid: int) -> bool:
        return pid in self.alive

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for pid, at in list(self.exit_at.items()):
            if self.now >= at and pid in self.alive:
                self.alive.discard(pid)
        if self.main is not None and self.main not in self.alive:
            # A clean exit of a Restart=always unit: systemd starts it again after RestartSec.
            self.main, self.active_state, self.sub_state = None, "activating", "auto-restart"
            self.restart_due = self.now + self.restart_sec
        if self.start_works and self.restart_due is not None and self.now >= self.restart_due and not self.main:
            self.spawn()
        for pid, at in self.ready_at.items():
            if self.now >= at and pid == self.main:
                self.marker.write_text(json.dumps({"pid": pid, "node": "default@host"}))

    # -- helpers --
    def spawn(self) -> None:
        self.next_pid += 1
        self.main = self.next_pid
        self.alive.add(self.main)
        self.active_state, self.sub_state = "active", "running"
        self.ready_at[self.main] = self.now + self.ready_delay
        self.restart_due = None

    def show(self) -> str:
        return "\n".join(
            [
                f"LoadState={self.load_state}",
                f"ActiveState={self.active_state}",
                f"SubState={self.sub_state}",
                f"MainPID={self.main or 0}",
                f"TimeoutStopUSec={self.timeout_stop}",
                "RuntimeDirectory=celery/worker-default",
                "ExecStart={ path=/opt/r/bin/celery ; argv[]=/opt/r/bin/celery -A reliable_celery_app worker "
                "--hostname=default@%h --statedb=/var/lib/x ; ignore_errors=no }",
                "User=celery",
                "Group=celery",
                "EnvironmentFiles=/etc/celery/worker.env (ignore_errors=no)",
                "EnvironmentFiles=/etc/celery/worker-instances/default.env (ignore_errors=no)",
            ]
        )

    def stop(self) -> None:
        self.main, self.alive, self.active_state, self.sub_state = None, set(), "inactive", "dead"

    def systemctl_verbs(self) -> list[str]:
        return [args[1] for args in self.commands if args[0].endswith("systemctl") and args[1] != "show"]


class FakeModule:
    def __init__(self, systemd: FakeSystemd, check_mode: bool = False, **params: object) -> None:
        self.systemd = systemd
        self.check_mode = check_mode
        self.params = {
            "name": "celery-worker@default",
            "state": "restarted",
            "drain_timeout": None,
            "ready_timeout": 120.0,
            "readiness": "marker",
            "marker_path": str(systemd.marker),
            "node": None,
            "kill_after": None,
            **params,
        }

    def get_bin_path(self, name: str, required: bool = False) -> str:
        return f"/usr/bin/{name}"

    def run_command(self, args: list[str]) -> tuple[int, str, str]:
        return self.systemd.run_command(args)


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSystemd:
    fake = FakeSystemd(tmp_path / "ready")
    monkeypatch.setattr(restart_module.os, "kill", fake.kill)
    monkeypatch.setattr(restart_module, "process_running", fake.running)
    monkeypatch.setattr(restart_module.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(restart_module.time, "sleep", fake.sleep)
    return fake


def restart(systemd: FakeSystemd, **params: object) -> dict:
    return restart_module.WorkerRestart(FakeModule(systemd, **params)).run()


def test_running_worker_gets_sigterm_on_its_main_pid_only_then_a_ready_successor(systemd) -> None:
    result = restart(systemd)
    assert systemd.signals == [(100, signal.SIGTERM)]
    # The drained worker waits to auto-restart: a restart starts it without the RestartSec wait.
    assert systemd.systemctl_verbs() == ["restart"]
    assert result == {
        "changed": True,
        "old_pid": 100,
        "new_pid": 101,
        "was_running": True,
        "signalled": True,
        "killed": False,
        "drain_seconds": pytest.approx(3.0, abs=0.25),
        "ready_seconds": pytest.approx(1.5, abs=0.25),
    }


def test_drain_timeout_fails_clearly_and_kills_nothing(systemd) -> None:
    systemd.drain_seconds = 600
    with pytest.raises(restart_module.RestartFailed) as failure:
        restart(systemd, drain_timeout=30.0)
    message = str(failure.value)
    assert "celery-worker@default.service (main pid 100) is still finishing its tasks 30 s after SIGTERM" in message
    assert "Nothing was killed" in message
    assert systemd.signals == [(100, signal.SIGTERM)]
    assert systemd.systemctl_verbs() == [], "nothing may be started or killed while the old worker drains"
    assert 100 in systemd.alive


def test_drain_timeout_defaults_to_the_units_stop_timeout(systemd) -> None:
    systemd.drain_seconds = 10_000
    with pytest.raises(restart_module.RestartFailed, match="300 s after SIGTERM"):
        restart(systemd)


def test_a_unit_without_stop_timeout_needs_an_explicit_drain_timeout(systemd) -> None:
    systemd.timeout_stop = "infinity"
    with pytest.raises(restart_module.RestartFailed, match="set drain_timeout"):
        restart(systemd)
    assert systemd.signals == []


def test_kill_after_kills_the_rest_of_the_unit_and_goes_on(systemd) -> None:
    systemd.drain_seconds = 600
    result = restart(systemd, kill_after=20.0, drain_timeout=30.0)
    assert result["killed"] is True
    assert result["drain_seconds"] == pytest.approx(20.0, abs=0.25)
    assert systemd.systemctl_verbs() == ["kill", "restart"]
    kill = next(args for args in systemd.commands if "kill" in args)
    assert kill[-3:] == ["--signal=SIGKILL", "--", "celery-worker@default.service"]
    assert "--kill-whom=all" in kill


@pytest.mark.parametrize("state", ["restarted", "started"])
def test_stopped_unit_is_started_and_confirmed_ready(systemd, state: str) -> None:
    systemd.stop()
    result = restart(systemd, state=state)
    assert result["changed"] is True
    assert systemd.systemctl_verbs() == ["start"]
    assert systemd.signals == []
    assert (result["was_running"], result["signalled"]) == (False, False)
    assert (result["old_pid"], result["new_pid"]) == (None, 101)
    assert result["ready_seconds"] == pytest.approx(1.5, abs=0.25)


def test_state_started_leaves_a_running_worker_alone(systemd) -> None:
    result = restart(systemd, state="started")
    assert (result["changed"], result["was_running"], result["old_pid"]) == (False, True, 100)
    assert systemd.signals == []
    assert systemd.systemctl_verbs() == []


def test_unknown_unit_fails_clearly(systemd) -> None:
    systemd.load_state = "not-found"
    with pytest.raises(restart_module.RestartFailed, match="is not loaded \\(LoadState=not-found\\)"):
        restart(systemd)
    assert systemd.signals == []


def test_check_mode_reports_a_change_and_sends_nothing(systemd) -> None:
    module = FakeModule(systemd, check_mode=True)
    result = restart_module.WorkerRestart(module).run()
    assert (result["changed"], result["old_pid"], result["new_pid"]) == (True, 100, None)
    assert systemd.signals == []
    assert systemd.systemctl_verbs() == []


def test_restart_by_systemd_itself_is_not_doubled(systemd) -> None:
    """Restart=always brought the worker back before the module's start: the module sends
    nothing more and takes the process systemd started."""
    systemd.restart_sec = 0.0
    result = restart(systemd)
    assert result["new_pid"] == 101
    assert systemd.next_pid == 101, "a second process was started"
    assert systemd.systemctl_verbs() == []


def test_plain_start_of_a_unit_waiting_to_auto_restart_would_wait_restart_sec(systemd, monkeypatch) -> None:
    """Why the module restarts a unit in auto-restart: systemd holds a start until RestartSec."""
    monkeypatch.setattr(restart_module.WorkerRestart, "start", lambda self, _old: self.systemctl_run("start"))
    result = restart(systemd)
    assert result["drain_seconds"] == pytest.approx(3.0, abs=0.25)
    assert systemd.now - 1000.0 >= 3.0 + 5.0 + 1.5 - 0.25


def test_stale_or_foreign_marker_is_not_readiness(systemd) -> None:
    systemd.marker.write_text(json.dumps({"pid": 100}))  # the old process's marker
    systemd.ready_delay = 7.0
    result = restart(systemd)
    assert result["ready_seconds"] == pytest.approx(7.0, abs=0.25)


def test_worker_that_never_gets_ready_fails_with_its_journal(systemd) -> None:
    systemd.ready_delay = 10_000
    with pytest.raises(restart_module.RestartFailed) as failure:
        restart(systemd, ready_timeout=15.0)
    assert "(main pid 101) did not report ready (readiness=marker) within 15 s" in str(failure.value)
    assert "journal lines" in str(failure.value)


def test_start_that_brings_no_new_process_fails(systemd) -> None:
    systemd.start_works = False
    with pytest.raises(restart_module.RestartFailed, match="has no new main process"):
        restart(systemd, ready_timeout=5.0)


def test_process_gone_before_the_signal_counts_as_drained(systemd) -> None:
    systemd.alive.clear()
    result = restart(systemd)
    assert result["signalled"] is False
    assert result["new_pid"] == 101


def test_unit_being_stopped_by_someone_else_is_waited_for_not_signalled(systemd) -> None:
    systemd.active_state = "deactivating"
    systemd.exit_at[100] = systemd.now + 4
    result = restart(systemd)
    assert systemd.signals == []
    assert result["drain_seconds"] == pytest.approx(4.0, abs=0.25)
    assert result["new_pid"] == 101


def test_ping_readiness_asks_the_node_as_the_unit_would(systemd, monkeypatch) -> None:
    monkeypatch.setattr(restart_module.socket, "gethostname", lambda: "worker1")
    result = restart(systemd, readiness="ping")
    ping = next(args for args in systemd.commands if args[0] == "systemd-run")
    assert ping == [
        "systemd-run", "--quiet", "--pipe", "--wait", "--collect",
        "-p", "User=celery", "-p", "Group=celery",
        "-p", "EnvironmentFile=/etc/celery/worker.env",
        "-p", "EnvironmentFile=/etc/celery/worker-instances/default.env",
        "/opt/r/bin/celery", "-A", "reliable_celery_app",
        "inspect", "ping", "-d", "default@worker1", "--timeout", "1",
    ]  # fmt: skip
    assert result["new_pid"] == 101


def test_marker_readiness_needs_a_runtime_directory_or_a_path(systemd, monkeypatch) -> None:
    monkeypatch.setattr(FakeSystemd, "show", lambda self: "LoadState=loaded\nActiveState=inactive\nMainPID=0\n")
    with pytest.raises(restart_module.RestartFailed, match="no RuntimeDirectory"):
        restart(systemd, marker_path=None)
    assert systemd.systemctl_verbs() == [], "a readiness problem must stop the module before it sends anything"
