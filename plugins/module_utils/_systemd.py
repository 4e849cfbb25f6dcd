# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a systemd unit's state through ``systemctl show``.

Private to this collection: the name starts with ``_`` and may change without notice.
"""

from __future__ import annotations

# Properties the restart module and the tests read to follow a unit's main process.
PROCESS_PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID", "ExecMainStartTimestampMonotonic")


class UnitQueryError(Exception):
    """systemctl could not answer for a unit."""


def parse_show_output(output):
    """Return the ``KEY=VALUE`` lines printed by ``systemctl show`` as a dict.

    Values may contain ``=`` themselves (ExecStart, Environment); only the first one splits.
    """
    properties = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            properties[key] = value
    return properties


def show_unit(run_command, systemctl, unit, properties=PROCESS_PROPERTIES):
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
