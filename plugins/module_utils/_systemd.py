# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a systemd unit's state through ``systemctl show``.

Private to this collection: the name starts with ``_`` and may change without notice.
"""

from __future__ import annotations


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


def show_unit(run_command, systemctl, unit, properties):
    """Query ``properties`` of ``unit`` with ``run_command`` (``AnsibleModule.run_command``)."""
    args = [systemctl, "show", "--no-pager"]
    args.extend("--property=%s" % name for name in properties)
    args.extend(["--", unit])
    rc, out, err = run_command(args)
    if rc != 0:
        raise UnitQueryError("systemctl show %s failed (rc=%d): %s" % (unit, rc, err.strip() or out.strip()))
    return parse_show_output(out)


def is_loaded(properties):
    """Whether systemd loaded a usable unit file (not ``not-found``, ``masked``, ``bad-setting``)."""
    return properties.get("LoadState") == "loaded"


def main_pid(properties):
    """The unit's main process id, or ``None`` when it has none (stopped, starting, exited)."""
    try:
        pid = int(properties.get("MainPID", "0"))
    except ValueError:
        return None
    return pid or None


TIMESPAN_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
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


def environment_files(value):
    """Paths of an ``EnvironmentFiles`` property (``/etc/x.env (ignore_errors=no)`` per line)."""
    return [line.split(" (")[0] for line in value.splitlines() if line.strip()]
