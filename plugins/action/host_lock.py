# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's half of the host lock: who this run is, and whether a holder on this controller is gone.

The module (plugins/modules/host_lock.py) keeps the record on the host; this plugin runs in a worker
process that ansible-playbook forks for each task, so the run is the worker's parent process.
"""

from __future__ import annotations

import datetime
import getpass
import os
import shutil
import socket
import subprocess

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.reliable.celery.plugins.module_utils import _host_lock

MODULE = "reliable.celery.host_lock"


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def process_start(pid):
    """A token for when process PID started, or "" when no such process runs.

    Linux: the start in clock ticks since boot (/proc/PID/stat field 22); elsewhere what `ps` prints.
    """
    stat = _read("/proc/%d/stat" % pid)
    if stat:
        return stat.rpartition(")")[2].split()[19]
    if os.path.isdir("/proc/self"):
        return ""  # Linux, and no such process
    ps = shutil.which("ps")
    if ps is None:
        return ""
    answer = subprocess.run([ps, "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, check=False)  # noqa: S603
    return answer.stdout.strip() if answer.returncode == 0 else ""


def process_started(pid, start):
    """When process PID started, for people: ISO 8601 in UTC where the kernel says, else START as `ps` printed it."""
    boot_time = next((line.split()[1] for line in _read("/proc/stat").splitlines() if line.startswith("btime ")), "")
    if not (boot_time and start.isdigit()):
        return start
    epoch = int(boot_time) + int(start) / os.sysconf("SC_CLK_TCK")
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def current_user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "uid %d" % os.getuid()


def run_identity(pid):
    """The ansible-playbook run whose process is PID, as the lock records it."""
    start = process_start(pid)
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_namespace = ""
    return {
        "controller": socket.gethostname(),
        "pid_namespace": pid_namespace,
        "boot_id": _read("/proc/sys/kernel/random/boot_id").strip(),
        "pid": pid,
        "pid_start": start,
        "user": current_user(),
        "started": process_started(pid, start),
    }


def holder_gone(record, identity):
    """Whether the run of RECORD certainly no longer runs: it ran on this controller and its process is gone
    (or its pid now belongs to a process started later). A holder on another controller is never certainly gone
    here: its lease decides (the module)."""
    if not _host_lock.same_controller(record, identity):
        return False
    try:
        pid = int(record.get("pid"))
    except (TypeError, ValueError):
        return False
    start = process_start(pid)
    return not start or (bool(record.get("pid_start")) and start != record["pid_start"])


def held_message(host, record, path):
    return (
        "Another run of the reliable.celery roles holds %s: %s. This run stops here on that host; run it "
        "again once that one is over. If that run is gone (interrupted on another controller), wait for the end "
        "of its lease or remove %s/holder.json on the host." % (host, _host_lock.describe(record), path)
    )


def lost_message(host, record, identity):
    """The message for a run that finds its own lock held by another run: both ran at once."""
    took_over = record.get("took_over") or {}
    how = " (%s)" % took_over.get("reason") if took_over.get("id") == _host_lock.identity_id(identity) else ""
    return (
        "This run's lock on %s was taken over%s by another run: %s. Both runs may have changed the host; run "
        "again once that run is over, and raise celery_lock_lease_seconds above the longest time between two "
        "lock tasks of one run." % (host, how, _host_lock.describe(record))
    )


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    # holder and take_over are this plugin's to set.
    _VALID_ARGS = frozenset(("state", "lease_seconds", "path"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        host = task_vars.get("inventory_hostname", "the host")
        parent = os.getppid()
        if parent == 1:
            raise AnsibleActionFail("host_lock runs in a worker of ansible-playbook, whose process is gone")
        identity = run_identity(parent)
        args = dict(self._task.args, holder=identity)
        answer = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        held = _found_holder(answer)
        if held is not None and holder_gone(held, identity):
            args = dict(args, take_over=held["id"])
            answer = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
            held = _found_holder(answer)
        result.update(answer)
        if held is not None:
            mine = (held.get("took_over") or {}).get("id") == _host_lock.identity_id(identity)
            message = lost_message(host, held, identity) if mine else held_message(host, held, answer.get("directory"))
            return dict(result, failed=True, msg=message)
        if answer.get("action") == "none" and answer.get("holder"):  # released, but another run holds it
            return dict(result, failed=True, msg=lost_message(host, answer["holder"], identity))
        if answer.get("took_over"):
            took_over = answer["took_over"]
            message = "Took over the lock on %s from %s: %s." % (host, took_over["holder"], took_over["reason"])
            self._display.warning(message)
        return result


def _found_holder(answer):
    """The record of another run that the module found holding the host, or None."""
    if answer.get("failed") or answer.get("action") != _host_lock.HELD:
        return None
    return answer.get("holder")
