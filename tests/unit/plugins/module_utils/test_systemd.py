"""Unit tests for plugins/module_utils/_systemd.py."""

from __future__ import annotations

import pytest
from ansible_collections.reliable.celery.plugins.module_utils import _systemd

SHOW_RUNNING = """LoadState=loaded
ActiveState=active
SubState=running
MainPID=4242
ExecMainStartTimestampMonotonic=123456789
"""


class FakeRunCommand:
    """Records the argument list and answers like AnsibleModule.run_command."""

    def __init__(self, rc: int = 0, out: str = "", err: str = "") -> None:
        self.result = (rc, out, err)
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> tuple[int, str, str]:
        self.calls.append(args)
        return self.result


def test_parse_show_output_splits_on_the_first_equals_sign_only() -> None:
    output = "ExecStart={ path=/opt/venv/bin/celery ; argv[]=celery -A x worker }\nMainPID=7\n"
    assert _systemd.parse_show_output(output) == {
        "ExecStart": "{ path=/opt/venv/bin/celery ; argv[]=celery -A x worker }",
        "MainPID": "7",
    }


def test_parse_show_output_ignores_lines_without_a_key() -> None:
    assert _systemd.parse_show_output("\nnot a property\nType=simple\n") == {"Type": "simple"}


def test_show_unit_asks_once_for_every_property_with_an_argument_list() -> None:
    run = FakeRunCommand(out=SHOW_RUNNING)
    state = _systemd.show_unit(run, "/bin/systemctl", "celery-worker@default")
    assert run.calls == [
        [
            "/bin/systemctl",
            "show",
            "--no-pager",
            *("--property=%s" % name for name in _systemd.PROPERTIES),
            "--",
            "celery-worker@default",
        ]
    ]
    assert (state.unit, state.main_pid, state.loaded, state.running) == ("celery-worker@default", 4242, True, True)


def test_show_unit_raises_with_systemctl_message_on_failure() -> None:
    run = FakeRunCommand(rc=1, err="Failed to connect to bus\n")
    with pytest.raises(_systemd.UnitQueryError, match="Failed to connect to bus"):
        _systemd.show_unit(run, "/bin/systemctl", "x.service")


def test_unit_state_reads_every_property() -> None:
    output = """LoadState=loaded
ActiveState=deactivating
SubState=stop-sigterm
MainPID=17
UnitFileState=enabled
TimeoutStopUSec=1h 30min
RuntimeDirectory=celery/worker-default celery/other
ExecStart={ path=/opt/r/bin/celery ; argv[]=/opt/r/bin/celery -A app worker ; ignore_errors=no }
User=celery
Group=workers
EnvironmentFiles=/etc/a.env (ignore_errors=no)
EnvironmentFiles=/etc/b.env (ignore_errors=yes)
WorkingDirectory=/var/lib/celery
NeedDaemonReload=yes
"""
    assert _systemd.UnitState.from_show_output("x.service", output) == _systemd.UnitState(
        unit="x.service",
        load_state="loaded",
        active_state="deactivating",
        sub_state="stop-sigterm",
        main_pid=17,
        unit_file_state="enabled",
        timeout_stop="1h 30min",
        runtime_directories=("celery/worker-default", "celery/other"),
        exec_start_argv=("/opt/r/bin/celery", "-A", "app", "worker"),
        user="celery",
        group="workers",
        environment_files=("/etc/a.env", "/etc/b.env"),
        working_directory="/var/lib/celery",
        need_daemon_reload=True,
    )


def state(output: str) -> _systemd.UnitState:
    return _systemd.UnitState.from_show_output("x.service", output)


@pytest.mark.parametrize(("value", "expected"), [("0", None), ("17", 17), ("garbage", None), ("", None)])
def test_main_pid(value: str, expected: int | None) -> None:
    assert state("MainPID=%s" % value).main_pid == expected


def test_a_unit_that_is_not_shown_has_no_main_pid_and_is_not_loaded() -> None:
    assert (state("").main_pid, state("").loaded) == (None, False)


@pytest.mark.parametrize("load_state", ["not-found", "masked", "bad-setting", "error", ""])
def test_units_that_cannot_be_started_are_not_loaded(load_state: str) -> None:
    assert not state("LoadState=%s" % load_state).loaded


@pytest.mark.parametrize(
    ("active_state", "main_pid", "running", "stopped"),
    [
        ("active", 7, True, False),
        ("reloading", 7, True, False),
        ("active", 0, False, False),
        ("activating", 7, False, False),
        ("deactivating", 7, False, False),
        ("inactive", 0, False, True),
        ("failed", 0, False, True),
    ],
)
def test_running_and_stopped(active_state: str, main_pid: int, running: bool, stopped: bool) -> None:
    unit = state("ActiveState=%s\nMainPID=%d" % (active_state, main_pid))
    assert (unit.running, unit.stopped) == (running, stopped)


def test_stop_timeout() -> None:
    assert state("TimeoutStopUSec=5min").stop_timeout == 300.0
    assert state("TimeoutStopUSec=infinity").stop_timeout is None


def test_repeated_keys_keep_every_line() -> None:
    output = "EnvironmentFiles=/etc/a.env (ignore_errors=no)\nEnvironmentFiles=/etc/b.env (ignore_errors=yes)\n"
    properties = _systemd.parse_show_output(output)
    assert _systemd.environment_files(properties["EnvironmentFiles"]) == ["/etc/a.env", "/etc/b.env"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5min", 300.0),
        ("1h 30min", 5400.0),
        ("500ms", 0.5),
        ("1min 30s", 90.0),
        ("1month 1y", 2629800.0 + 31557600.0),
        ("90", 90.0),
        ("infinity", None),
        ("", None),
    ],
)
def test_parse_timespan(value: str, seconds: float | None) -> None:
    assert _systemd.parse_timespan(value) == seconds


def test_parse_timespan_refuses_what_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="not a systemd time span"):
        _systemd.parse_timespan("5 fortnights")


def test_exec_start_argv() -> None:
    value = (
        "{ path=/opt/r/bin/celery ; argv[]=/opt/r/bin/celery -A app worker --hostname=default@%h ; "
        "ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
    )
    assert _systemd.exec_start_argv(value) == ["/opt/r/bin/celery", "-A", "app", "worker", "--hostname=default@%h"]
    assert _systemd.exec_start_argv("") == []


def test_load_credentials_follow_drop_ins_and_resets() -> None:
    text = (
        "[Service]\nLoadCredential=a:/x/a\nLoadCredential=b:/x/b\n"
        "# drop-in\n[Service]\nLoadCredential=\nLoadCredential=c:/x/c\n"
    )
    assert _systemd.load_credentials(text) == ["c:/x/c"]
    assert _systemd.load_credentials("[Service]\nLoadCredential=a:/x/a\nLoadCredentialEncrypted=b:/x/b\n") == ["a:/x/a"]


@pytest.mark.parametrize(
    ("argv", "app"),
    [
        (["celery", "-A", "reliable_celery_app", "worker"], "reliable_celery_app"),
        (["celery", "-Aproj", "worker"], "proj"),
        (["celery", "--app=proj.celery:app", "beat"], "proj.celery:app"),
        (["celery", "--app", "proj", "flower"], "proj"),
        (["celery", "worker"], None),
        (["celery", "-A"], None),
    ],
)
def test_celery_app_argument(argv: list[str], app: str | None) -> None:
    assert _systemd.celery_app_argument(argv) == app
