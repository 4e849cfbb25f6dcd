# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bringing a drained worker's generation back when its successor cannot start.

Before a drain, what the running main process started with is copied into a snapshot under
/run/reliable-celery-rollback: its environment (``/proc/PID/environ``, less what systemd sets itself), its credentials
(``$CREDENTIALS_DIRECTORY``) and its command line and settings (``start.json``, which the
``reliable_celery_app`` wrapper writes into its RuntimeDirectory). If the new process does not get
ready, a runtime drop-in makes the unit start that snapshot again; the next restart removes it.
Both live in /run: a reboot starts the unit as installed.

Private to this collection: the name starts with ``_`` and may change without notice.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil

# The service user reads the settings: not below /run/reliable-celery (the host lock's, root only).
SNAPSHOT_DIR = "reliable-celery-rollback/%s"
DROP_IN = "systemd/system/%s.d/60-reliable-celery-rollback.conf"
START_RECORD = "start.json"
# Set by systemd for every service (systemd.exec(5), "Environment Variables in Spawned Processes"):
# the unit gets its own again; the snapshot keeps only what the environment files gave.
SYSTEMD_VARIABLES = frozenset(
    {
        "PATH", "LANG", "LANGUAGE", "USER", "LOGNAME", "HOME", "SHELL", "PWD", "TERM",
        "INVOCATION_ID", "JOURNAL_STREAM", "SYSTEMD_EXEC_PID", "NOTIFY_SOCKET", "MAINPID", "MANAGERPID",
        "RUNTIME_DIRECTORY", "STATE_DIRECTORY", "CACHE_DIRECTORY", "LOGS_DIRECTORY", "CONFIGURATION_DIRECTORY",
        "CREDENTIALS_DIRECTORY", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
        "MEMORY_PRESSURE_WATCH", "MEMORY_PRESSURE_WRITE", "TRIGGER_UNIT", "TRIGGER_PATH",
    }
)  # fmt: skip


class SnapshotError(Exception):
    """The running process cannot be snapshotted (no start record, a process that is gone)."""


def parse_environ(data):
    """``/proc/PID/environ`` (NUL-separated ``NAME=value``) as a dict."""
    variables = {}
    for entry in data.decode("utf-8", "surrogateescape").split("\0"):
        name, separator, value = entry.partition("=")
        if separator and name:
            variables[name] = value
    return variables


def environment_file_text(variables):
    """``NAME="value"`` lines as the roles write them (plugins/filter/environment_file.py)."""
    lines = []
    for name in sorted(variables):
        escaped = variables[name].replace("\\", "\\\\").replace('"', '\\"')
        lines.append('%s="%s"\n' % (name, escaped))
    return "".join(lines)


def exec_quote(argument):
    """One ExecStart= argument, read back by systemd unchanged: quoted, with its escapes, ``%`` and ``$``."""
    escaped = argument.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return '"%s"' % escaped


def drop_in_text(snapshot_dir, credentials, argv, watched=True):
    """The rollback drop-in; WATCHED: whether the process ran under systemd's watchdog (a wrapper from
    before the watchdog sends no WATCHDOG=1, and would be aborted again and again)."""
    lines = [
        "# Written by reliable.celery's celery_worker_restart: its new configuration could not start, so this",
        "# unit runs its previous one again until the next restart. Gone at reboot.",
        "[Service]",
        "EnvironmentFile=",
        "EnvironmentFile=%s" % os.path.join(snapshot_dir, "environment"),
        "LoadCredential=",
    ]
    lines += ["LoadCredential=%s:%s" % (name, os.path.join(snapshot_dir, "credentials", name)) for name in credentials]
    lines += ["ExecStart=", "ExecStart=%s" % " ".join(exec_quote(argument) for argument in argv)]
    if not watched:
        lines.append("WatchdogSec=0")
    return "\n".join(lines) + "\n"


class Snapshot:
    """The snapshot and drop-in of one unit, below ``run_root`` (/run); ``proc_root`` is /proc."""

    def __init__(self, unit, run_root="/run", proc_root="/proc"):
        self.unit = unit
        self.run_root = run_root
        self.proc_root = proc_root
        self.directory = os.path.join(run_root, SNAPSHOT_DIR % unit)
        self.drop_in = os.path.join(run_root, DROP_IN % unit)

    def capture(self, pid, runtime_directory, group):
        """Copy what process PID started with; RUNTIME_DIRECTORY (below run_root) holds its start record."""
        try:
            with open(os.path.join(self.run_root, runtime_directory, START_RECORD)) as record_file:
                record = json.load(record_file)
            with open(os.path.join(self.proc_root, str(pid), "environ"), "rb") as environ_file:
                environ = parse_environ(environ_file.read())
        except (OSError, ValueError) as error:
            raise SnapshotError("no start record of main pid %s to bring back (%s)" % (pid, error)) from None
        if not isinstance(record, dict) or not record.get("argv"):
            raise SnapshotError("the start record of main pid %s names no command line" % pid)
        gid = grp.getgrnam(group).gr_gid if group else 0
        self.remove()
        os.makedirs(os.path.join(self.directory, "credentials"), mode=0o700)
        # The service's group reads settings.json; the environment and the credentials are root's (0600, 0700).
        os.chmod(self.directory, 0o750)  # noqa: S103
        os.chown(self.directory, 0, gid)
        credentials = []
        source = environ.get("CREDENTIALS_DIRECTORY")
        for name in sorted(os.listdir(source)) if source and os.path.isdir(source) else []:
            self._write(os.path.join("credentials", name), _read(os.path.join(source, name)), 0o600, 0)
            credentials.append(name)
        variables = {name: value for name, value in environ.items() if name not in SYSTEMD_VARIABLES}
        if "settings" in record:
            settings = os.path.join(self.directory, "settings.json")
            self._write("settings.json", json.dumps(record["settings"]).encode(), 0o640, gid)
            variables["RELIABLE_CELERY_SETTINGS"] = settings
        self._write("environment", environment_file_text(variables).encode(), 0o600, 0)
        text = drop_in_text(self.directory, credentials, record["argv"], watched="WATCHDOG_USEC" in environ)
        self._write("drop-in.conf", text.encode(), 0o600, 0)

    @property
    def captured(self):
        return os.path.exists(os.path.join(self.directory, "drop-in.conf"))

    def install_drop_in(self):
        os.makedirs(os.path.dirname(self.drop_in), mode=0o755, exist_ok=True)
        shutil.copyfile(os.path.join(self.directory, "drop-in.conf"), self.drop_in)
        os.chmod(self.drop_in, 0o644)

    def remove_drop_in(self):
        """Whether there was a drop-in to remove (systemd must then reload)."""
        if not os.path.exists(self.drop_in):
            return False
        os.remove(self.drop_in)
        with contextlib.suppress(OSError):  # other drop-ins
            os.rmdir(os.path.dirname(self.drop_in))
        return True

    def remove(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def _write(self, name, content, mode, gid):
        path = os.path.join(self.directory, name)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as target:
            target.write(content)
        os.chown(path, 0, gid)


def _read(path):
    with open(path, "rb") as source:
        return source.read()
