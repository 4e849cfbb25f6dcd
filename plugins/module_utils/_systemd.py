# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a systemd unit's state through ``systemctl show``.

Private to this collection: the name starts with ``_`` and may change without notice.
"""

from __future__ import annotations

from dataclasses import dataclass

# What UnitState reads of a unit.
PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "UnitFileState",
    "TimeoutStopUSec",
    "RuntimeDirectory",
    "ExecStart",
    "User",
    "Group",
    "EnvironmentFiles",
    "WorkingDirectory",
    "NeedDaemonReload",
)
# A unit with a main process in one of these states is running.
RUNNING_STATES = ("active", "reloading")


class UnitQueryError(Exception):
    """systemctl could not answer for a unit."""


def parse_show_output(output):
    """Return the ``KEY=VALUE`` lines printed by ``systemctl show`` as a dict.

    Values may contain ``=`` themselves (ExecStart, Environment); only the first one splits.
    A key printed on several lines (EnvironmentFiles) keeps its lines joined by newlines.
    """
    properties = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            properties[key] = properties[key] + "\n" + value if key in properties else value
    return properties


@dataclass(frozen=True)
class UnitState:
    """A unit's state at one moment: one ``systemctl show`` answer for PROPERTIES."""

    unit: str
    load_state: str
    active_state: str
    sub_state: str
    main_pid: int | None  # None when it has no main process (stopped, starting, exited)
    unit_file_state: str
    timeout_stop: str  # TimeoutStopUSec as printed: "5min", "infinity"
    runtime_directories: tuple[str, ...]
    exec_start_argv: tuple[str, ...]
    user: str
    group: str
    environment_files: tuple[str, ...]
    working_directory: str
    need_daemon_reload: bool  # its unit files changed on disk since systemd loaded them

    @classmethod
    def from_show_output(cls, unit, output):
        shown = parse_show_output(output)
        return cls(
            unit=unit,
            load_state=shown.get("LoadState", ""),
            active_state=shown.get("ActiveState", ""),
            sub_state=shown.get("SubState", ""),
            main_pid=parse_pid(shown.get("MainPID", "")),
            unit_file_state=shown.get("UnitFileState", ""),
            timeout_stop=shown.get("TimeoutStopUSec", ""),
            runtime_directories=tuple(shown.get("RuntimeDirectory", "").split()),
            exec_start_argv=tuple(exec_start_argv(shown.get("ExecStart", ""))),
            user=shown.get("User", ""),
            group=shown.get("Group", ""),
            environment_files=tuple(environment_files(shown.get("EnvironmentFiles", ""))),
            working_directory=shown.get("WorkingDirectory", ""),
            need_daemon_reload=shown.get("NeedDaemonReload", "") == "yes",
        )

    @property
    def loaded(self):
        """Whether systemd loaded a usable unit file (not ``not-found``, ``masked``, ``bad-setting``)."""
        return self.load_state == "loaded"

    @property
    def running(self):
        """Whether the unit has a main process and is up (not starting or stopping)."""
        return self.main_pid is not None and self.active_state in RUNNING_STATES

    @property
    def stopped(self):
        return self.active_state in ("inactive", "failed")

    @property
    def stop_timeout(self):
        """Seconds of TimeoutStopSec, or ``None`` when it has none."""
        return parse_timespan(self.timeout_stop)


def show_unit(run_command, systemctl, unit):
    """The UnitState of ``unit`` from one ``systemctl show``, run with ``run_command``
    (``AnsibleModule.run_command``)."""
    args = [systemctl, "show", "--no-pager"]
    args.extend("--property=%s" % name for name in PROPERTIES)
    args.extend(["--", unit])
    rc, out, err = run_command(args)
    if rc != 0:
        raise UnitQueryError("systemctl show %s failed (rc=%d): %s" % (unit, rc, err.strip() or out.strip()))
    return UnitState.from_show_output(unit, out)


def parse_pid(value):
    """A MainPID value as a process id; ``None`` for ``0`` (no main process) or garbage."""
    try:
        return int(value or "0") or None
    except ValueError:
        return None


TIMESPAN_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "month": 2629800.0,
    "y": 31557600.0,
}


def parse_timespan(value):
    """Seconds of a systemd time span as ``systemctl show`` prints it (``1h 30min``, ``500ms``);
    ``None`` for ``infinity`` or an empty value."""
    value = value.strip()
    if not value or value == "infinity":
        return None
    seconds = 0.0
    for part in value.split():
        number = part.rstrip("abcdefghijklmnopqrstuvwxyzM")
        unit = part[len(number) :] or "s"
        if unit not in TIMESPAN_UNITS or not number:
            raise ValueError("not a systemd time span: %r" % value)
        seconds += float(number) * TIMESPAN_UNITS[unit]
    return seconds


def exec_start_argv(value):
    """The argument list of the first command in an ``ExecStart`` property
    (``{ path=/bin/x ; argv[]=/bin/x -a b ; ignore_errors=no ; ... }``)."""
    marker = "argv[]="
    start = value.find(marker)
    if start < 0:
        return []
    end = value.find(" ;", start)
    return value[start + len(marker) : end if end >= 0 else None].split()


def load_credentials(unit_text):
    """The ``LoadCredential=`` values of a unit as ``systemctl cat`` prints it (its file and
    drop-ins, in order; an empty assignment resets the list). ``systemctl show`` cannot print them."""
    values = []
    for line in unit_text.splitlines():
        key, separator, value = line.strip().partition("=")
        if separator and key == "LoadCredential":
            values = [*values, value] if value else []
    return values


def celery_app_argument(argv):
    """The ``-A``/``--app`` value of a ``celery`` command line, or ``None``."""
    for index, arg in enumerate(argv):
        if arg.startswith("--app="):
            return arg.split("=", 1)[1]
        if arg.startswith("-A") and len(arg) > 2:
            return arg[2:]
        if arg in ("-A", "--app") and index + 1 < len(argv):
            return argv[index + 1]
    return None


def environment_files(value):
    """Paths of an ``EnvironmentFiles`` property (``/etc/x.env (ignore_errors=no)`` per line)."""
    return [line.split(" (")[0] for line in value.splitlines() if line.strip()]
