"""The module, run through main(), against a simulated systemd: every time-out and race path."""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.reliable.celery.plugins.modules import celery_worker_restart as restart_module

UNIT = "celery-worker@default.service"
SLOT_B = "celery-worker-b@default.service"


# What `systemctl cat` prints for the worker's unit: the file, then a drop-in.
UNIT_TEXT = """# /etc/systemd/system/celery-worker@.service
[Service]
LoadCredential=result_backend:/etc/celery/credentials/worker/result_backend
# /etc/systemd/system/celery-worker@.service.d/override.conf
[Service]
LoadCredential=
LoadCredential=broker_url:/etc/celery/credentials/worker/broker_url
"""


class FakeHost:
    """systemd and the processes of a host. Time only moves when the module sleeps."""

    def __init__(self, run_root: Path) -> None:
        self.now = 1000.0
        self.run_root = run_root
        self.next_pid = 99
        self.alive: set[int] = set()
        self.exit_at: dict[int, float] = {}
        self.signals: list[tuple[int, int]] = []
        self.commands: list[list[str]] = []
        self.units: dict[str, FakeSystemd] = {}
        # The generation the instance's files name (RELIABLE_CELERY_GENERATION); a process keeps the one it
        # started with.
        self.files_generation = "g1"
        self.generation_of: dict[int, str] = {}
        self.leases = "on"  # what a new process writes into its readiness marker
        # What the app check (systemd-run python -c ...) answers: rc, stdout, stderr.
        self.app_check = (0, "", "")
        self.credential_files: dict[str, str] = {}
        # A configuration on disk whose processes never get ready (the rollback drop-in starts the previous one).
        self.broken_config = False
        self.journal = "journal lines\n"

    # -- what the module calls --
    def run_command(self, args: list[str]) -> tuple[int, str, str]:
        self.commands.append(args)
        verb = args[1] if args[0].endswith("systemctl") else args[0]
        if verb == "daemon-reload":
            for unit in self.units.values():
                unit.need_daemon_reload = False
            return 0, "", ""
        if verb in ("show", "start", "restart", "stop", "kill", "enable", "disable", "reset-failed"):
            return self.units[args[-1]].systemctl(verb, args)
        if verb == "cat":
            return 0, UNIT_TEXT, ""
        if verb == "systemd-run" and "inspect" in args:  # celery inspect ping -d NODE
            node = args[args.index("-d") + 1]
            return (0 if any(unit.answers(node) for unit in self.units.values()) else 1), "", ""
        if verb == "systemd-run":  # the app check
            return self.app_check
        return 0, self.journal, ""

    def kill(self, pid: int, signum: int) -> None:
        if pid not in self.alive:
            raise ProcessLookupError(pid)
        self.signals.append((pid, signum))
        unit = next(unit for unit in self.units.values() if unit.main == pid)
        self.exit_at[pid] = self.now + unit.drain_seconds
        unit.report_stop_deadline()

    def running(self, pid: int) -> bool:
        return pid in self.alive

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for pid, at in list(self.exit_at.items()):
            if self.now >= at:
                self.alive.discard(pid)
        for unit in self.units.values():
            unit.tick()

    def spawn(self) -> int:
        self.next_pid += 1
        self.alive.add(self.next_pid)
        self.generation_of[self.next_pid] = self.files_generation
        return self.next_pid


class FakeSystemd:
    """One unit of a FakeHost; what a test reads that belongs to the host (signals, commands,
    time) is passed through to it."""

    def __init__(self, host: FakeHost, name: str, *, running: bool = True, enabled: bool = True) -> None:
        self.host, self.name = host, name
        host.units[name] = self
        slot_suffix = "-b" if name.startswith("celery-worker-b@") else ""
        self.instance = name.split("@")[1].removesuffix(".service") + slot_suffix
        self.marker = host.run_root / f"celery/worker-{self.instance}/ready"
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.load_state = "loaded"
        self.enabled = enabled
        self.main: int | None = None
        self.active_state, self.sub_state = "inactive", "dead"
        self.restart_sec = 5.0  # Restart=always waits this long after a clean exit
        self.restart_due: float | None = None
        self.timeout_stop = "5min"
        # While it stops, the worker's running tasks are within their hard time limits this much longer: it extends
        # the stop timeout to then + TimeoutStopSec (EXTEND_TIMEOUT_USEC) and reports that deadline. None: no tasks.
        self.tasks_within_limits: float | None = None
        self.stop_by: float | None = None
        self.stopping_since: float | None = None
        self.sigkilled = False
        self.drain_seconds = 3.0  # how long a SIGTERMed main process takes to exit
        self.ready_delay = 1.5  # worker_ready fires this long after a start
        self.exits_after: float | None = None  # a new process ends this long after its start (a start canary failed)
        self.failed = False  # its last process exited with a failure status
        self.ready_at: dict[int, float] = {}
        self.start_works = True
        self.need_daemon_reload = False
        if running:
            self.spawn()

    def __getattr__(self, name: str):
        return getattr(self.host, name)

    def systemctl(self, verb: str, args: list[str]) -> tuple[int, str, str]:
        if verb == "show":  # only the properties asked for, as systemctl does
            asked = [arg.removeprefix("--property=") for arg in args if arg.startswith("--property=")]
            lines = [line for line in self.show().splitlines() if line.partition("=")[0] in asked]
            return 0, "\n".join(lines), ""
        if verb == "start":
            # systemd holds a start job while the unit waits to auto-restart (service_start: -EAGAIN)
            if self.start_works and self.sub_state != "auto-restart" and self.main not in self.host.alive:
                self.spawn()
        elif verb == "restart":
            if self.start_works and self.main not in self.host.alive:
                self.spawn()
        elif verb == "stop":
            self.begin_stop()
            if "--no-block" not in args:
                while self.active_state not in ("inactive", "failed"):
                    self.host.sleep(0.2)
        elif verb == "kill":
            self.host.alive.discard(self.main)
            self.tick()
        elif verb in ("enable", "disable"):
            self.enabled = verb == "enable"
        elif verb == "reset-failed" and self.active_state == "failed":
            self.failed, self.active_state = False, "inactive"
        return 0, "", ""

    def begin_stop(self) -> None:
        """KillMode=mixed: SIGTERM to the main process only."""
        if self.main in self.host.alive:
            self.host.kill(self.main, signal.SIGTERM)
            self.active_state, self.sub_state, self.stopping_since = "deactivating", "stop-sigterm", self.host.now
        else:
            self.stop()

    def report_stop_deadline(self) -> None:
        """The wrapper at SIGTERM: it extends systemd's stop timeout and records the deadline beside the marker."""
        if self.tasks_within_limits is None:
            return
        self.stop_by = (
            self.host.now + self.tasks_within_limits + restart_module._systemd.parse_timespan(self.timeout_stop)
        )
        record = {"pid": self.main, "stop_by_monotonic": self.stop_by}
        (self.marker.parent / restart_module.STOP_DEADLINE).write_text(json.dumps(record))

    def tick(self) -> None:
        if self.stopping_since is not None:
            timeout = restart_module._systemd.parse_timespan(self.timeout_stop)
            deadline = None if timeout is None else max(self.stopping_since + timeout, self.stop_by or 0)
            if self.main not in self.host.alive:
                self.stop()
            elif deadline is not None and self.host.now >= deadline:
                self.sigkilled = True  # systemd's own SIGKILL when TimeoutStopSec passes
                self.host.alive.discard(self.main)
                self.stop()
            return
        if self.main is not None and self.main not in self.host.alive:
            # An exit of a Restart=always unit: systemd starts it again after RestartSec.
            self.failed = self.exits_after is not None  # an exit with a failure status
            self.main, self.active_state, self.sub_state = None, "activating", "auto-restart"
            self.restart_due = self.host.now + self.restart_sec
        if self.start_works and self.restart_due is not None and self.host.now >= self.restart_due and not self.main:
            self.spawn()
        for pid, at in self.ready_at.items():
            if self.host.now >= at and pid == self.main:
                record = {
                    "pid": pid,
                    "node": f"{self.instance}@host",
                    "generation": self.host.generation_of[pid],
                    "leases": self.host.leases,
                }
                self.marker.write_text(json.dumps(record))

    def answers(self, node: str) -> bool:
        """Whether this unit's worker is the node and ready to answer a ping."""
        return node.startswith(f"{self.instance}@") and self.host.now >= self.ready_at.get(self.main, math.inf)

    # -- helpers --
    def spawn(self) -> None:
        self.main, self.failed = self.host.spawn(), False
        self.active_state, self.sub_state = "active", "running"
        rolled_back = Path(self.host.run_root, restart_module._rollback.DROP_IN % self.name).exists()
        broken = self.host.broken_config and not rolled_back
        self.ready_at[self.main] = math.inf if broken else self.host.now + self.ready_delay
        if self.exits_after is not None:
            self.host.exit_at[self.main] = self.host.now + self.exits_after
        self.restart_due = None
        # What the process started with: its environment (/proc/PID/environ) and the wrapper's start record.
        credentials = self.host.run_root / "credentials" / self.name
        credentials.mkdir(parents=True, exist_ok=True)
        (credentials / "broker_url").write_text("redis://:pw-one-two-three@broker:6379/0")
        environ = self.host.run_root / "proc" / str(self.main) / "environ"
        environ.parent.mkdir(parents=True)
        environ.write_bytes(
            f"INVOCATION_ID=abc\0CREDENTIALS_DIRECTORY={credentials}\0RELIABLE_CELERY_SETTINGS=/etc/celery/worker-settings.json"
            f'\0RELIABLE_CELERY_GENERATION={self.host.generation_of[self.main]}\0QUOTED=a"b$c\0'.encode()
        )
        argv = [
            "/opt/r/bin/python3",
            "/opt/r/bin/celery",
            "-A",
            "reliable_celery_app",
            "worker",
            f"--hostname={self.instance}@h%",
        ]
        record = {"argv": argv, "settings": {"task_acks_late": True, "generation": self.host.generation_of[self.main]}}
        (self.marker.parent / "start.json").write_text(json.dumps(record))

    def show(self) -> str:
        return "\n".join(
            [
                f"LoadState={self.load_state}",
                f"ActiveState={self.active_state}",
                f"SubState={self.sub_state}",
                f"MainPID={self.main or 0}",
                f"UnitFileState={'enabled' if self.enabled else 'disabled'}",
                f"NeedDaemonReload={'yes' if self.need_daemon_reload else 'no'}",
                "WorkingDirectory=/var/lib/celery",
                f"TimeoutStopUSec={self.timeout_stop}",
                f"RuntimeDirectory=celery/worker-{self.instance}",
                "ExecStart={ path=/opt/r/bin/celery ; argv[]=/opt/r/bin/celery -A reliable_celery_app worker "
                f"--hostname={self.instance}@%h --statedb=/var/lib/x ; ignore_errors=no }}",
                "User=celery",
                "Group=celery",
                "EnvironmentFiles=/etc/celery/worker.env (ignore_errors=no)",
                "EnvironmentFiles=/etc/celery/worker-instances/default.env (ignore_errors=no)",
            ]
        )

    def stop(self) -> None:
        self.host.alive.discard(self.main)
        self.main, self.active_state, self.sub_state = None, "failed" if self.failed else "inactive", "dead"
        self.stopping_since = self.stop_by = None
        (self.marker.parent / restart_module.STOP_DEADLINE).unlink(missing_ok=True)  # systemd removes RuntimeDirectory

    def systemctl_verbs(self) -> list[str]:
        return [
            args[1] for args in self.host.commands if args[0].endswith("systemctl") and args[1] not in ("show", "cat")
        ]


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = FakeHost(tmp_path)
    monkeypatch.setattr(restart_module, "RUNTIME_ROOT", str(tmp_path))
    monkeypatch.setattr(restart_module, "PROC_ROOT", str(tmp_path / "proc"))
    monkeypatch.setattr(restart_module._rollback.grp, "getgrnam", lambda _name: type("Group", (), {"gr_gid": 0}))
    monkeypatch.setattr(restart_module.os, "kill", fake.kill)
    monkeypatch.setattr(restart_module, "process_running", fake.running)
    monkeypatch.setattr(restart_module.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(restart_module.time, "sleep", fake.sleep)
    monkeypatch.setattr(AnsibleModule, "run_command", lambda _module, args: fake.run_command(args))
    monkeypatch.setattr(AnsibleModule, "get_bin_path", lambda _module, name, required=False: f"/usr/bin/{name}")
    return fake


@pytest.fixture
def systemd(host: FakeHost) -> FakeSystemd:
    """A running worker unit with no second slot."""
    return FakeSystemd(host, UNIT)


@pytest.fixture
def module(host: FakeHost, capsys: pytest.CaptureFixture[str]) -> Callable[..., dict]:
    """Run the module's main() on the simulated host with these arguments (name defaults to the
    first unit); its result."""

    def run_main(**args: object) -> dict:
        with patch_module_args({"name": "celery-worker@default", **args}), pytest.raises(SystemExit):
            restart_module.main()
        return json.loads(capsys.readouterr().out)

    return run_main


@pytest.fixture
def run(module: Callable[..., dict]) -> Callable[..., dict]:
    """main() that must succeed."""

    def succeed(**args: object) -> dict:
        result = module(**args)
        assert "failed" not in result, result["msg"]
        return result

    return succeed


@pytest.fixture
def fail(module: Callable[..., dict]) -> Callable[..., dict]:
    """main() that must fail."""

    def failing(**args: object) -> dict:
        result = module(**args)
        assert result.get("failed") is True, result
        return result

    return failing


HANDOVER = {"other_slot": "celery-worker-b@default", "strategy": "handover"}


def test_running_worker_gets_sigterm_on_its_main_pid_only_then_a_ready_successor(systemd, run) -> None:
    result = run()
    assert systemd.signals == [(100, signal.SIGTERM)]
    # The drained worker waits to auto-restart: a restart starts it without the RestartSec wait.
    assert systemd.systemctl_verbs() == ["restart"]
    assert result == {
        "changed": True,
        "unit": UNIT,
        "previous_unit": None,
        "old_pid": 100,
        "new_pid": 101,
        "was_running": True,
        "signalled": True,
        "killed": False,
        "drain_seconds": pytest.approx(3.0, abs=0.25),
        "ready_seconds": pytest.approx(1.5, abs=0.25),
        "generation": None,
        "stale": False,
        "leases": "on",
        "start_canary_seconds": None,
        "rolled_back": False,
    }


def test_drain_timeout_fails_clearly_and_kills_nothing(systemd, fail) -> None:
    systemd.drain_seconds = 600
    result = fail(drain_timeout=30)
    assert result["msg"] == (
        "celery-worker@default.service (main pid 100) is still finishing its tasks 30 s after SIGTERM "
        "(drain_timeout=30.0). Nothing was killed: it keeps draining and systemd will start it again once it "
        "exits. Wait, raise drain_timeout, or set kill_after to kill what is left (its tasks then run again)."
    )
    assert (result["old_pid"], result["signalled"], result["killed"]) == (100, True, False)
    assert systemd.signals == [(100, signal.SIGTERM)]
    assert systemd.systemctl_verbs() == [], "nothing may be started or killed while the old worker drains"
    assert 100 in systemd.alive


def test_drain_timeout_defaults_to_the_units_stop_timeout(systemd, fail) -> None:
    systemd.drain_seconds = 10_000
    assert "300 s after SIGTERM" in fail()["msg"]


def test_without_drain_timeout_a_drain_lasts_as_long_as_the_worker_says_its_tasks_may(systemd, run, fail) -> None:
    systemd.drain_seconds = 500
    systemd.tasks_within_limits = 400
    assert run()["drain_seconds"] == pytest.approx(500.0, abs=0.5)
    systemd.drain_seconds = 10_000
    assert "700 s after SIGTERM" in fail()["msg"], "the task's limit (400 s) + TimeoutStopSec (300 s)"
    assert not systemd.sigkilled


def test_drain_timeout_wins_over_the_deadline_the_worker_reports(systemd, fail) -> None:
    systemd.drain_seconds = 500
    systemd.tasks_within_limits = 400
    assert "30 s after SIGTERM" in fail(drain_timeout=30)["msg"]


def test_a_unit_without_stop_timeout_needs_an_explicit_drain_timeout(systemd, fail) -> None:
    systemd.timeout_stop = "infinity"
    assert "set drain_timeout" in fail()["msg"]
    assert systemd.signals == []


def test_a_stop_timeout_the_module_cannot_read_fails_clearly_before_any_signal(systemd, fail) -> None:
    systemd.timeout_stop = "5 fortnights"
    assert "TimeoutStopSec this module cannot read ('5 fortnights')" in fail()["msg"]
    assert systemd.signals == []


@pytest.mark.parametrize("option", ["drain_timeout", "ready_timeout", "kill_after"])
def test_seconds_must_be_positive(systemd, fail, option: str) -> None:
    assert fail(**{option: 0})["msg"] == f"{option} must be a positive number of seconds, got 0.0"
    assert systemd.commands == []


def test_kill_after_kills_the_rest_of_the_unit_and_goes_on(systemd, run) -> None:
    systemd.drain_seconds = 600
    result = run(kill_after=20, drain_timeout=30)
    assert result["killed"] is True
    assert result["drain_seconds"] == pytest.approx(20.0, abs=0.25)
    assert systemd.systemctl_verbs() == ["kill", "restart"]
    kill = next(args for args in systemd.commands if "kill" in args)
    assert kill[-3:] == ["--signal=SIGKILL", "--", "celery-worker@default.service"]
    assert "--kill-whom=all" in kill


def test_kill_after_at_the_drain_timeout_gives_the_killed_worker_time_to_go(systemd, run) -> None:
    systemd.drain_seconds = 600
    result = run(kill_after=30, drain_timeout=30)
    assert (result["killed"], result["new_pid"]) == (True, 101)


@pytest.mark.parametrize("state", ["restarted", "started"])
def test_stopped_unit_is_started_and_confirmed_ready(systemd, run, state: str) -> None:
    systemd.stop()
    result = run(state=state)
    assert result["changed"] is True
    assert systemd.systemctl_verbs() == ["start"]
    assert systemd.signals == []
    assert (result["was_running"], result["signalled"]) == (False, False)
    assert (result["old_pid"], result["new_pid"]) == (None, 101)
    assert result["ready_seconds"] == pytest.approx(1.5, abs=0.25)


def test_state_started_leaves_a_running_worker_alone(systemd, run) -> None:
    result = run(state="started")
    assert (result["changed"], result["was_running"], result["old_pid"]) == (False, True, 100)
    assert systemd.signals == []
    assert systemd.systemctl_verbs() == []


def test_unknown_unit_fails_clearly(systemd, fail) -> None:
    systemd.load_state = "not-found"
    assert fail()["msg"] == (
        "unit celery-worker@default.service is not loaded (LoadState=not-found): "
        "is the name right and the unit installed?"
    )
    assert systemd.signals == []


def test_check_mode_reports_a_change_and_sends_nothing(systemd, run) -> None:
    result = run(_ansible_check_mode=True)
    assert (result["changed"], result["old_pid"], result["new_pid"]) == (True, 100, None)
    assert systemd.signals == []
    assert systemd.systemctl_verbs() == []


def test_restart_by_systemd_itself_is_not_doubled(systemd, run) -> None:
    """Restart=always brought the worker back before the module's start: the module sends
    nothing more and takes the process systemd started."""
    systemd.restart_sec = 0.0
    result = run()
    assert result["new_pid"] == 101
    assert systemd.next_pid == 101, "a second process was started"
    assert systemd.systemctl_verbs() == []


def test_stale_or_foreign_marker_is_not_readiness(systemd, run) -> None:
    systemd.marker.write_text(json.dumps({"pid": 100}))  # the old process's marker
    systemd.ready_delay = 7.0
    result = run()
    assert result["ready_seconds"] == pytest.approx(7.0, abs=0.25)


def test_the_lease_mode_the_new_process_runs_is_returned_and_a_fallback_warned(host, systemd, run, monkeypatch) -> None:
    warned = []
    monkeypatch.setattr(AnsibleModule, "warn", lambda _module, message: warned.append(message))
    assert run()["leases"] == "on"
    assert warned == []
    host.leases = "fallback: kombu 5.8.0 is not one of 5.7.x"
    assert run()["leases"] == host.leases
    assert warned == [
        "celery-worker@default.service runs without visibility leases (fallback: kombu 5.8.0 is not one of 5.7.x):"
        " its visibility timeout is the longest task's (docs/delivery.md#visibility-leases-redis)"
    ]


def test_worker_that_never_gets_ready_fails_with_its_journal(systemd, fail) -> None:
    systemd.ready_delay = 10_000
    message = fail(ready_timeout=15)["msg"]
    assert "(main pid 101) did not report ready (readiness=marker) within 15 s" in message
    assert "journal lines" in message


def test_start_that_brings_no_new_process_fails(systemd, fail) -> None:
    systemd.start_works = False
    assert "has no new main process" in fail(ready_timeout=5)["msg"]


def test_process_gone_before_the_signal_counts_as_drained(systemd, run) -> None:
    systemd.alive.clear()
    result = run()
    assert result["signalled"] is False
    assert result["new_pid"] == 101


def test_unit_being_stopped_by_someone_else_is_waited_for_not_signalled(systemd, run) -> None:
    systemd.active_state = "deactivating"
    systemd.exit_at[100] = systemd.now + 4
    result = run()
    assert systemd.signals == []
    assert result["drain_seconds"] == pytest.approx(4.0, abs=0.25)
    assert result["new_pid"] == 101


def test_ping_readiness_asks_the_node_as_the_unit_would(systemd, run, monkeypatch) -> None:
    monkeypatch.setattr(restart_module.socket, "gethostname", lambda: "worker1")
    result = run(readiness="ping")
    ping = next(args for args in systemd.commands if args[0] == "systemd-run" and "inspect" in args)
    assert ping == [
        "systemd-run", "--quiet", "--pipe", "--wait", "--collect",
        "-p", "User=celery", "-p", "Group=celery", "-p", "WorkingDirectory=/var/lib/celery",
        "-p", "EnvironmentFile=/etc/celery/worker.env",
        "-p", "EnvironmentFile=/etc/celery/worker-instances/default.env",
        "-p", "LoadCredential=broker_url:/etc/celery/credentials/worker/broker_url",
        "/opt/r/bin/celery", "-A", "reliable_celery_app",
        "inspect", "ping", "-d", "default@worker1", "--timeout", "1",
    ]  # fmt: skip
    assert result["new_pid"] == 101
    assert result["ready_seconds"] == pytest.approx(1.5, abs=0.25)


def test_readiness_none_waits_for_a_new_main_pid_only(systemd, run) -> None:
    systemd.ready_delay = 10_000
    result = run(readiness="none")
    assert (result["changed"], result["new_pid"], result["ready_seconds"]) == (True, 101, 0.0)
    assert not any(args[0] == "systemd-run" and "inspect" in args for args in systemd.commands)


def test_marker_readiness_needs_a_runtime_directory_or_a_path(systemd, fail, monkeypatch) -> None:
    monkeypatch.setattr(FakeSystemd, "show", lambda self: "LoadState=loaded\nActiveState=inactive\nMainPID=0\n")
    assert "no RuntimeDirectory" in fail()["msg"]
    assert systemd.systemctl_verbs() == [], "a readiness problem must stop the module before it sends anything"


# --- two slots: handover ---


@pytest.fixture
def slots(host: FakeHost) -> tuple[FakeSystemd, FakeSystemd]:
    """An instance with two slots: the first one current (enabled, running), the second stopped."""
    return FakeSystemd(host, UNIT), FakeSystemd(host, SLOT_B, running=False, enabled=False)


def commands_on(host: FakeHost, unit: str) -> list[str]:
    return [" ".join(args[1:-2]) for args in host.commands if args[-1] == unit and args[1] not in ("show", "cat")]


def test_handover_starts_the_other_slot_and_stops_the_old_one_only_once_the_new_one_is_ready(host, slots, run) -> None:
    a, b = slots
    a.drain_seconds = 400  # longer than its TimeoutStopSec (5 min): its task is within its limit, systemd waits
    a.tasks_within_limits = 450
    result = run(**HANDOVER)
    assert result == {
        "changed": True,
        "unit": SLOT_B,
        "previous_unit": UNIT,
        "old_pid": 100,
        "new_pid": 101,
        "was_running": True,
        "signalled": True,
        "killed": False,
        "drain_seconds": pytest.approx(400.0, abs=0.5),
        "ready_seconds": pytest.approx(1.5, abs=0.25),
        "generation": None,
        "stale": False,
        "leases": "on",
        "start_canary_seconds": None,
        "rolled_back": False,
    }
    assert commands_on(host, SLOT_B) == ["start", "enable"]
    assert commands_on(host, UNIT) == ["stop --no-block", "disable"]
    order = [args[1:] for args in host.commands if args[1] not in ("show", "cat")]
    assert order.index(["start", "--", SLOT_B]) < order.index(["stop", "--no-block", "--", UNIT])
    assert host.signals == [(100, signal.SIGTERM)], "SIGTERM to the old main process only"
    assert not a.sigkilled, "the worker extends its stop timeout while its task is within its limit"
    assert (a.active_state, a.enabled, b.active_state, b.enabled) == ("inactive", False, "active", True)
    assert "daemon-reload" not in [args[1] for args in host.commands]


def test_an_old_slot_whose_task_outlasts_its_limit_is_killed_by_systemd_at_the_deadline_it_reported(slots, run) -> None:
    a, _b = slots
    a.drain_seconds = 10_000
    a.tasks_within_limits = 100
    result = run(**HANDOVER)
    assert a.sigkilled, "systemd's SIGKILL, TimeoutStopSec (300 s) after the task's limit"
    assert (result["unit"], result["killed"]) == (SLOT_B, False)
    assert result["drain_seconds"] == pytest.approx(400.0, abs=0.5)


@pytest.mark.usefixtures("slots")
def test_handover_unit_is_still_accepted_for_other_slot(run) -> None:
    result = run(handover_unit="celery-worker-b@default", strategy="handover")
    assert (result["unit"], result["previous_unit"]) == (SLOT_B, UNIT)


@pytest.mark.usefixtures("slots")
def test_handover_needs_the_other_slot(host, fail) -> None:
    assert fail(strategy="handover")["msg"] == "strategy is handover but all of the following are missing: other_slot"
    assert host.commands == []


def test_the_next_handover_goes_back_to_the_first_slot(slots, run) -> None:
    a, b = slots
    run(**HANDOVER)
    result = run(**HANDOVER)
    assert (result["unit"], result["previous_unit"], result["old_pid"], result["new_pid"]) == (UNIT, SLOT_B, 101, 102)
    assert (a.active_state, a.enabled, b.active_state, b.enabled) == ("active", True, "inactive", False)


def test_a_new_slot_that_never_gets_ready_is_stopped_and_the_old_one_keeps_running_untouched(host, slots, fail) -> None:
    a, b = slots
    b.ready_delay = 10_000
    message = fail(**HANDOVER, ready_timeout=15)["msg"]
    assert "celery-worker-b@default.service (main pid 101) did not report ready" in message
    assert message.endswith(
        "\nThe handover did not happen: celery-worker-b@default.service was stopped again, "
        "and celery-worker@default.service (main pid 100) keeps running untouched."
    )
    assert commands_on(host, UNIT) == []
    assert host.signals == [(101, signal.SIGTERM)], "only the new slot is stopped"
    assert (a.main, a.active_state, a.enabled) == (100, "active", True)
    assert (b.active_state, b.enabled) == ("inactive", False)


def test_a_new_slot_whose_start_canary_failed_fails_the_handover_at_once_naming_the_error(host, slots, fail) -> None:
    a, b = slots
    b.ready_delay = 10_000
    b.exits_after = 3.0
    host.journal = (
        "Dec 06 10:00:01 w1 celery-worker-b@default[101]: [CRITICAL] start canary: example.health failed"
        " (OperationalError: database unreachable). This worker consumes none of its queues and stops.\n"
    )
    started = host.now
    message = fail(**HANDOVER, ready_timeout=60)["msg"]
    assert message.startswith(
        "celery-worker-b@default.service (main pid 101) ended before it reported ready: its start canary failed:"
        " example.health failed (OperationalError: database unreachable). This worker consumes none of its queues"
        " and stops. Journal:\n"
    )
    assert host.now - started < 5, "it fails once the process ended, not at ready_timeout"
    assert commands_on(host, SLOT_B)[-2:] == ["stop", "reset-failed"], "the new slot is left inactive, not failed"
    assert host.signals == [], "the old slot is not touched"
    assert (a.main, a.active_state, a.enabled) == (100, "active", True)
    assert (b.active_state, b.enabled) == ("inactive", False)


def test_a_handover_waits_for_an_earlier_old_slot_still_draining(host, slots, run) -> None:
    _a, b = slots
    b.spawn()
    b.begin_stop()  # still draining 3 s from an earlier handover
    result = run(**HANDOVER)
    assert result["unit"] == SLOT_B
    assert result["new_pid"] == 102
    assert commands_on(host, SLOT_B)[:2] == ["start", "enable"]


def test_a_handover_fails_clearly_when_the_earlier_old_slot_drains_past_the_deadline(host, slots, fail) -> None:
    a, b = slots
    b.spawn()
    b.drain_seconds = 600
    b.tasks_within_limits = 900
    b.begin_stop()
    assert fail(**HANDOVER, drain_timeout=30)["msg"] == (
        "celery-worker-b@default.service (main pid 101) is still finishing its tasks 30 s after SIGTERM, "
        "from an earlier handover; it must finish before the next handover (drain_timeout=30.0). "
        "Nothing was killed: it keeps draining. Wait, raise drain_timeout, or set kill_after to kill what is left "
        "(its tasks then run again)."
    )
    assert commands_on(host, UNIT) == []
    assert commands_on(host, SLOT_B) == []
    assert (a.main, a.active_state) == (100, "active")


def test_both_slots_running_is_refused(host, slots, fail) -> None:
    _a, b = slots
    b.spawn()
    assert "both slots of the instance run" in fail(**HANDOVER)["msg"]
    assert host.signals == []


def test_kill_after_kills_what_is_left_of_the_old_slot(host, slots, run) -> None:
    a, _b = slots
    a.drain_seconds = 600
    result = run(**HANDOVER, kill_after=20, drain_timeout=30)
    assert result["killed"] is True
    assert result["drain_seconds"] == pytest.approx(20.0, abs=0.5)
    assert "kill --kill-whom=all --signal=SIGKILL" in commands_on(host, UNIT)


def test_an_old_slot_draining_past_drain_timeout_fails_after_the_handover(slots, fail) -> None:
    a, b = slots
    a.drain_seconds = 600
    assert "after the handover to celery-worker-b@default.service" in fail(**HANDOVER, drain_timeout=30)["msg"]
    assert (b.active_state, b.enabled, a.active_state, a.enabled) == ("active", True, "deactivating", False)
    assert not a.sigkilled


@pytest.mark.usefixtures("slots")
def test_state_started_leaves_the_running_current_slot_alone(host, run) -> None:
    result = run(**HANDOVER, state="started")
    assert (result["changed"], result["unit"], result["old_pid"]) == (False, UNIT, 100)
    assert [args[1] for args in host.commands if args[1] not in ("show", "cat")] == []


def test_state_started_enables_exactly_the_current_slot(slots, run) -> None:
    a, b = slots
    a.enabled = False
    a.stop()
    result = run(**HANDOVER, state="started")
    assert (result["changed"], result["unit"], result["new_pid"]) == (True, UNIT, 101)
    assert (a.active_state, a.enabled, b.enabled) == ("active", True, False)


@pytest.mark.usefixtures("slots")
def test_drain_with_two_slots_restarts_the_current_slot_in_place(host, run) -> None:
    run(**HANDOVER)
    result = run(other_slot="celery-worker-b@default", strategy="drain")
    assert (result["unit"], result["previous_unit"], result["old_pid"], result["new_pid"]) == (SLOT_B, None, 101, 102)
    assert host.units[UNIT].active_state == "inactive"


@pytest.mark.usefixtures("slots")
def test_check_mode_handover_reports_a_change_and_sends_nothing(host, run) -> None:
    result = run(**HANDOVER, _ansible_check_mode=True)
    assert (result["changed"], result["unit"], result["previous_unit"]) == (True, SLOT_B, UNIT)
    assert [args[1] for args in host.commands if args[1] not in ("show", "cat")] == []
    assert host.signals == []


@pytest.mark.usefixtures("slots")
def test_a_marker_path_cannot_serve_two_slots(fail) -> None:
    assert "each slot has its own readiness marker" in fail(**HANDOVER, marker_path="/run/x")["msg"]


# --- generations: restarts follow what runs, not what changed in this run ---


@pytest.mark.usefixtures("slots")
def test_started_reports_a_worker_on_another_generation_as_stale_and_leaves_it_running(host, run) -> None:
    host.sleep(2)  # the running slot is ready with generation g1
    result = run(**HANDOVER, state="started", generation="g2")
    assert (result["changed"], result["stale"], result["generation"]) == (True, True, "g1")
    assert host.signals == []
    assert commands_on(host, UNIT) == []
    assert commands_on(host, SLOT_B) == []


@pytest.mark.usefixtures("slots")
def test_started_on_the_desired_generation_changes_nothing(host, run) -> None:
    host.sleep(2)
    result = run(**HANDOVER, state="started", generation="g1")
    assert (result["changed"], result["stale"], result["generation"]) == (False, False, "g1")


@pytest.mark.usefixtures("slots")
def test_a_worker_that_predates_generations_is_stale(host, run) -> None:
    host.sleep(2)
    host.units[UNIT].marker.write_text(json.dumps({"pid": 100, "node": "default@host"}))
    assert run(**HANDOVER, state="started", generation="g1")["stale"] is True


@pytest.mark.usefixtures("slots")
def test_a_handover_confirms_the_new_slot_runs_the_desired_generation(host, run) -> None:
    host.files_generation = "g2"
    result = run(**HANDOVER, generation="g2")
    assert (result["unit"], result["generation"], result["stale"]) == (SLOT_B, "g2", False)


@pytest.mark.usefixtures("slots")
def test_a_new_slot_on_another_generation_than_asked_fails_and_the_old_one_keeps_running(host, fail) -> None:
    result = fail(**HANDOVER, generation="g2")  # the files still name g1: another run rewrote them
    assert "started generation g1, not g2" in result["msg"]
    assert "keeps running untouched" in result["msg"]
    assert host.units[UNIT].active_state == "active"
    assert host.units[SLOT_B].active_state == "inactive"


def test_generation_needs_the_readiness_marker(systemd, fail) -> None:
    assert "generation needs readiness=marker" in fail(generation="g1", readiness="ping")["msg"]
    assert systemd.commands == []


# --- the app check: nothing is stopped for a release or configuration that cannot load its app ---


@pytest.mark.parametrize("strategy", [{}, HANDOVER])
def test_an_app_that_does_not_load_fails_before_anything_is_stopped(host, slots, fail, strategy) -> None:
    host.app_check = (1, "", "Traceback...\nAttributeError: module 'pkg.celery' has no attribute 'nope'\n")
    args = strategy or {"other_slot": "celery-worker-b@default"}
    result = fail(**args)
    assert "cannot load its Celery app (-A reliable_celery_app)" in result["msg"]
    assert "has no attribute 'nope'" in result["msg"]
    assert host.signals == []
    assert commands_on(host, UNIT) == []
    assert commands_on(host, SLOT_B) == []
    check = next(args for args in host.commands if args[0] == "systemd-run")
    assert "-p" in check
    assert "LoadCredential=broker_url:/etc/celery/credentials/worker/broker_url" in check
    assert check[-4:-2] == ["/opt/r/bin/python", "-c"]
    assert check[-1] == "reliable_celery_app"


def test_the_app_check_can_be_turned_off(systemd, host, run) -> None:
    host.app_check = (1, "", "boom")
    assert run(app_check=False)["changed"] is True


# --- leftovers of interrupted runs ---


def test_units_changed_on_disk_are_reloaded_before_the_start(systemd, run) -> None:
    systemd.need_daemon_reload = True
    run()
    assert systemd.systemctl_verbs()[0] == "daemon-reload"


# --- secrets in what the module relays ---


def test_passwords_never_reach_the_modules_output(systemd, host, fail, tmp_path, monkeypatch) -> None:
    credential = tmp_path / "broker_url"
    credential.write_text("redis://:s3cret%2Fpw@broker:6379/0")
    monkeypatch.setattr(
        host, "run_command",
        lambda args, original=host.run_command: (0, f"LoadCredential=broker_url:{credential}\n", "")
        if args[1:2] == ["cat"] else original(args),
    )  # fmt: skip
    host.app_check = (
        1, "", "ValueError: cannot connect to redis://:s3cret%2Fpw@broker:6379/0 (s3cret/pw) amqp://u:other@h//\n"
    )  # fmt: skip
    message = fail()["msg"]
    assert "s3cret" not in message
    assert "other@" not in message
    assert "redis://:********@broker" in message


# --- a drain whose new configuration cannot start brings the previous generation back ---


def test_a_drain_whose_new_process_never_gets_ready_brings_the_previous_generation_back(systemd, host, fail) -> None:
    host.broken_config, host.files_generation = True, "g2"
    result = fail(ready_timeout=30, generation="g2")
    assert "did not report ready" in result["msg"]
    assert "Rolled back: celery-worker@default.service runs its previous generation again" in result["msg"]
    assert (result["rolled_back"], result["generation"]) == (True, "g2")  # the fake reads today's files
    assert systemd.active_state == "active"
    assert host.now >= systemd.ready_at[systemd.main], "the rolled-back worker is not ready"
    snapshot = host.run_root / "reliable-celery-rollback" / UNIT
    drop_in = (host.run_root / restart_module._rollback.DROP_IN.replace("%s", UNIT)).read_text()
    assert f"EnvironmentFile={snapshot}/environment" in drop_in
    assert f"LoadCredential=broker_url:{snapshot}/credentials/broker_url" in drop_in
    assert 'ExecStart="/opt/r/bin/python3" "/opt/r/bin/celery" "-A"' in drop_in
    assert '"--hostname=default@h%%"' in drop_in
    assert "WatchdogSec=0" in drop_in  # it ran without systemd's watchdog (no WATCHDOG_USEC)
    environment = (snapshot / "environment").read_text()
    assert "INVOCATION_ID" not in environment
    assert f'RELIABLE_CELERY_SETTINGS="{snapshot}/settings.json"' in environment
    assert 'QUOTED="a\\"b$c"' in environment
    assert json.loads((snapshot / "settings.json").read_text()) == {"task_acks_late": True, "generation": "g1"}
    assert oct((snapshot / "credentials" / "broker_url").stat().st_mode & 0o777) == "0o600"
    assert "pw-one-two-three" not in result["msg"]


def test_a_rollback_keeps_the_watchdog_of_a_process_that_ran_under_it() -> None:
    watched = restart_module._rollback.drop_in_text("/run/snapshot", [], ["/opt/r/bin/celery"], watched=True)
    assert "WatchdogSec" not in watched
    unwatched = restart_module._rollback.drop_in_text("/run/snapshot", [], ["/opt/r/bin/celery"], watched=False)
    assert unwatched.endswith("WatchdogSec=0\n")


def test_the_next_restart_removes_the_rollback_and_runs_the_installed_configuration(systemd, host, run, fail) -> None:
    host.broken_config = True
    fail(ready_timeout=30)
    host.broken_config = False
    result = run()
    assert result["rolled_back"] is False
    assert not (host.run_root / restart_module._rollback.DROP_IN.replace("%s", UNIT)).exists()
    assert not (host.run_root / "reliable-celery-rollback" / UNIT).exists()


def test_without_a_start_record_a_failed_drain_fails_saying_why_nothing_came_back(systemd, host, fail) -> None:
    (systemd.marker.parent / "start.json").unlink()
    host.broken_config = True
    result = fail(ready_timeout=30)
    assert result["rolled_back"] is False
    assert "Rolled back" not in result["msg"]
    assert "The previous generation cannot be brought back: no start record of main pid 100" in result["msg"]


def test_rollback_can_be_turned_off(systemd, host, fail) -> None:
    host.broken_config = True
    assert fail(ready_timeout=30, rollback=False)["rolled_back"] is False
    assert not (host.run_root / "reliable-celery-rollback").exists()


@pytest.mark.usefixtures("slots")
def test_a_handover_to_a_slot_left_rolled_back_removes_its_drop_in(host, run) -> None:
    drop_in = host.run_root / restart_module._rollback.DROP_IN.replace("%s", SLOT_B)
    drop_in.parent.mkdir(parents=True)
    drop_in.write_text("[Service]\n")
    run(**HANDOVER)
    assert not drop_in.exists()


def test_a_rolled_back_worker_on_the_desired_generation_again_loses_its_drop_in_not_its_process(
    systemd, host, run, fail
) -> None:
    host.broken_config, host.files_generation = True, "g2"
    fail(ready_timeout=30, generation="g2")
    pid = systemd.main
    result = run(state="started", generation="g1")  # the fake's rolled-back process started with g2's files
    assert result["stale"] is True
    host.files_generation = "g1"
    (systemd.marker).write_text(json.dumps({"pid": pid, "generation": "g1"}))
    result = run(state="started", generation="g1")
    assert (result["changed"], result["stale"], systemd.main) == (True, False, pid)
    assert not (host.run_root / restart_module._rollback.DROP_IN.replace("%s", UNIT)).exists()
    assert run(state="started", generation="g1")["changed"] is False
