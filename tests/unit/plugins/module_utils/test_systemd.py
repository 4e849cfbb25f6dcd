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


def test_show_unit_passes_an_argument_list_and_ends_options_before_the_unit() -> None:
    run = FakeRunCommand(out=SHOW_RUNNING)
    properties = _systemd.show_unit(run, "/bin/systemctl", "celery-worker@default", ("MainPID", "LoadState"))
    assert run.calls == [
        [
            "/bin/systemctl",
            "show",
            "--no-pager",
            "--property=MainPID",
            "--property=LoadState",
            "--",
            "celery-worker@default",
        ]
    ]
    assert _systemd.main_pid(properties) == 4242
    assert _systemd.is_loaded(properties)


def test_show_unit_raises_with_systemctl_message_on_failure() -> None:
    run = FakeRunCommand(rc=1, err="Failed to connect to bus\n")
    with pytest.raises(_systemd.UnitQueryError, match="Failed to connect to bus"):
        _systemd.show_unit(run, "/bin/systemctl", "x.service", ("MainPID",))


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"MainPID": "0"}, None),
        ({"MainPID": "17"}, 17),
        ({"MainPID": "garbage"}, None),
        ({}, None),
    ],
)
def test_main_pid(properties: dict[str, str], expected: int | None) -> None:
    assert _systemd.main_pid(properties) == expected


@pytest.mark.parametrize("load_state", ["not-found", "masked", "bad-setting", "error", ""])
def test_units_that_cannot_be_started_are_not_loaded(load_state: str) -> None:
    assert not _systemd.is_loaded({"LoadState": load_state})


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
