#!/usr/bin/python
# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: celery_worker_restart
short_description: Restart or start a Celery worker unit gracefully and confirm it is ready
version_added: 0.1.0
description:
  - Sends C(SIGTERM) to the unit's main process only (a Celery warm shutdown) and waits, within O(drain_timeout),
    until that process has finished its running tasks and exited. Then starts the unit, without racing systemd's
    own C(Restart=), and confirms that the new process is ready to consume, not merely C(active).
  - Never sends C(SIGKILL) unless O(kill_after) is set. On a drain time-out without O(kill_after) it fails and leaves
    the worker draining.
  - A unit that is not running is started and confirmed ready. A unit being stopped by someone else is waited for.
  - A C(Restart=always) unit that exited cleanly waits C(RestartSec) before systemd starts it again, and systemd
    holds a plain start until then; the module restarts such a unit at once instead, and leaves alone a unit that
    systemd already brought back.
  - With O(strategy=handover) a worker instance has two units, O(name) and O(other_slot) (its two slots); the one
    enabled for boot is current. The module starts the other slot and waits until it is ready; only then it stops
    the old slot, which finishes its running tasks while the new one already consumes, and makes the new slot the
    current one (enabled, the old one disabled). The old slot gets C(SIGTERM) on its main process from
    C(systemctl stop); systemd then waits as long as the worker extends its stop timeout (the
    C(reliable_celery_app) wrapper does while a running task is within its hard time limit).
  - Before it stops anything, the module imports the unit's Celery app (C(-A)) with the release, user, environment
    files and credentials of the unit as systemd will start it, and checks that it is a Celery app (O(app_check)).
    A failure leaves the running worker untouched.
  - With O(generation), the module compares the generation the running worker started with (written by the
    C(reliable_celery_app) wrapper into its readiness marker) with the desired one. O(state=started) reports a
    worker on another generation as C(stale) (and C(changed)) without touching it, so that the caller restarts it
    with its strategy; O(state=restarted) fails when the new process does not run the desired generation.
  - Passwords of the unit's credentials (C(LoadCredential=)) and of any URL are masked in what the module returns,
    journal excerpts included.
author:
  - reliable.celery maintainers (@reliable-celery)
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Reports C(changed=true) for a unit it would restart or start; sends nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: partial
    details: With O(state=started), yes. With O(state=restarted) every run restarts a running worker.
options:
  name:
    description:
      - The worker unit, for example C(celery-worker@default). C(.service) is added when no suffix is given.
    type: str
    required: true
  state:
    description:
      - V(restarted) drains a running worker and starts its successor; a worker that is not running is started.
      - V(started) starts a worker that is not running and confirms it ready, and leaves a running one alone
        (C(changed=false)). The celery_worker role starts its instances this way.
    type: str
    choices: [restarted, started]
    default: restarted
  strategy:
    description:
      - V(drain) stops the running worker, waits until it finished its tasks, and starts it again. Nothing consumes
        from the instance's queues meanwhile (as long as the longest running task).
      - V(handover) starts the instance's other slot (O(other_slot)) and stops the old one once the new one is
        ready. Both run during the handover (twice the memory and processes for as long as the longest running
        task), and the queues never stop being consumed.
      - With O(other_slot) set, V(drain) restarts the current slot in place.
    type: str
    choices: [drain, handover]
    default: drain
  other_slot:
    description:
      - The worker instance's other slot, for example C(celery-worker-b@default). Required with
        O(strategy=handover).
      - With it, the slot enabled for boot is the current one, whichever of the two it is, and both strategies act
        on the current slot.
      - Its Celery node name, state db and C(RuntimeDirectory) (readiness marker) must differ from O(name)'s.
    type: str
    aliases: [handover_unit]
  drain_timeout:
    description:
      - Seconds to wait, after C(SIGTERM), for the old main process to finish its tasks and exit.
      - With O(strategy=handover), also how long a handover waits for an earlier old slot that is still draining.
      - Defaults to as long as the worker says its running tasks may take, the stop deadline the
        C(reliable_celery_app) wrapper reports while a running task is within its hard time limit (the deadline it
        gives systemd, that limit + the unit's C(TimeoutStopSec)), and at least the unit's C(TimeoutStopSec).
    type: float
  ready_timeout:
    description:
      - Seconds to wait, after the start, for the new process to be ready.
    type: float
    default: 120
  readiness:
    description:
      - How the new process is confirmed ready.
      - V(marker) waits for the readiness marker the worker writes from its C(worker_ready) signal, naming the new
        main pid.
      - V(ping) waits until C(celery inspect ping) to the worker's node answers, run as the unit's user with its
        environment files and credentials (C(LoadCredential=)).
      - V(none) only waits for a new main pid.
    type: str
    choices: [marker, ping, none]
    default: marker
  marker_path:
    description:
      - The readiness marker. Defaults to C(ready) in the unit's C(RuntimeDirectory) below C(/run).
      - Not with O(other_slot), because each slot has its own marker.
    type: path
  node:
    description:
      - Celery node name to ping with O(readiness=ping). Defaults to the C(--hostname) of the unit's C(ExecStart),
        with C(%h) replaced by the host name.
      - Not with O(other_slot), because each slot has its own node name.
    type: str
  generation:
    description:
      - The generation the worker should run, as the celery_worker role writes it into the instance's environment
        file (C(RELIABLE_CELERY_GENERATION)). Needs O(readiness=marker).
    type: str
  app_check:
    description:
      - Import the unit's Celery app (C(-A)) as the new process will, and check that it is a Celery app, before
        stopping or starting anything.
    type: bool
    default: true
  rollback:
    description:
      - With the drain strategy, copy what the running worker started with (its environment, credentials,
        command line and settings, into C(/run/reliable-celery-rollback)) before it drains, and if the new process
        does not get ready, start that copy again (a runtime drop-in, removed by the next restart or a reboot) and
        fail. Needs the C(start.json) record of the C(reliable_celery_app) wrapper.
    type: bool
    default: true
  kill_after:
    description:
      - Seconds after C(SIGTERM) at which whatever is left of the unit is killed with C(SIGKILL).
      - Unset (the default), nothing is ever killed. Tasks that are killed are redelivered and run again from the
        start when the workers use late acknowledgement.
    type: float
notes:
  - The readiness marker is written by the C(reliable_celery_app) wrapper that the celery_worker role installs.
seealso:
  - name: reliable.celery.celery_worker role
    description: Installs the units this module restarts.
    link: https://github.com/reliable-celery/reliable.celery/tree/main/roles/celery_worker
"""

EXAMPLES = r"""
- name: Restart a worker, letting its running tasks finish
  reliable.celery.celery_worker_restart:
    name: celery-worker@default

- name: Restart, but kill what still runs after ten minutes
  reliable.celery.celery_worker_restart:
    name: celery-worker@reports
    drain_timeout: 660
    kill_after: 600

- name: Start a worker unless it runs, and wait until it is ready
  reliable.celery.celery_worker_restart:
    name: celery-worker@default
    state: started

- name: Hand the instance over to its other slot; the old one drains while the new one consumes
  reliable.celery.celery_worker_restart:
    name: celery-worker@default
    other_slot: celery-worker-b@default
    strategy: handover

- name: Confirm readiness by pinging the node
  reliable.celery.celery_worker_restart:
    name: celery-worker@default
    readiness: ping
"""

RETURN = r"""
unit:
  description: The unit that runs the worker now (with O(other_slot), the current slot).
  returned: always
  type: str
  sample: celery-worker-b@default.service
previous_unit:
  description: With O(strategy=handover), the slot that was stopped; null when nothing was handed over.
  returned: always
  type: str
  sample: celery-worker@default.service
old_pid:
  description: Main pid before the restart, or null when the unit was not running.
  returned: always
  type: int
  sample: 4242
new_pid:
  description: Main pid of the started process, or null in check mode.
  returned: always
  type: int
  sample: 4377
was_running:
  description: Whether the unit had a running main process.
  returned: always
  type: bool
  sample: true
signalled:
  description: Whether SIGTERM was sent to the old main process.
  returned: always
  type: bool
  sample: true
killed:
  description: Whether the unit was sent SIGKILL because O(kill_after) passed.
  returned: always
  type: bool
  sample: false
drain_seconds:
  description: Seconds from SIGTERM until the old main process exited (0 when none ran).
  returned: always
  type: float
  sample: 12.4
ready_seconds:
  description: Seconds from the start until the new process was ready.
  returned: always
  type: float
  sample: 1.9
generation:
  description: With O(generation), the generation the worker runs when the module returns; null without a worker.
  returned: always
  type: str
  sample: 3f0c9a1d2b7e4c55
rolled_back:
  description: Whether a drain's new process did not get ready and the previous generation runs again (the module
    then fails).
  returned: always
  type: bool
  sample: false
leases:
  description: With O(readiness=marker), the visibility-lease mode the ready process runs, from its readiness
    marker (C(on), C(off), or C(fallback) with the reason, which the module also warns about); null when it was
    not read.
  returned: always
  type: str
  sample: "on"
start_canary_seconds:
  description: With O(readiness=marker), how long the ready process's start canary took from its send until its
    task had run (the worker consumed its queues only then); null without a start canary or when it was not read.
  returned: always
  type: float
  sample: 0.4
stale:
  description: With O(state=started) and O(generation), whether the running worker runs another generation than
    O(generation) (the module leaves it running; the caller restarts it).
  returned: always
  type: bool
  sample: false
"""

import json
import os
import re
import signal
import socket
import time
from urllib.parse import unquote, urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.reliable.celery.plugins.module_utils import _rollback, _systemd

POLL_SECONDS = 0.2
# What the worker logs when its start canary failed (roles/celery_base/files/reliable_celery_app.py).
START_CANARY_LOG = "start canary: "
# After SIGKILL, the time the kernel and systemd get to reap the unit's processes.
KILL_GRACE_SECONDS = 10.0
RUNTIME_ROOT = "/run"
PROC_ROOT = "/proc"
# Beside the readiness marker: the wrapper's record, while it stops, of the CLOCK_MONOTONIC time by which its
# running tasks are past their hard time limits + TimeoutStopSec (what it asked systemd to wait for).
STOP_DEADLINE = "stop-deadline"
# The password of a URL (scheme://user:PASSWORD@host) in text the module relays.
URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/?#@\s]*:)[^@\s]+@")
# Shorter secrets are not masked: masking them would garble every message.
MIN_MASKED_LENGTH = 3
# Checks that the -A argument names a Celery app, the way `celery -A` finds it.
APP_CHECK = (
    "import sys\n"
    "from celery import Celery\n"
    "from celery.app.utils import find_app\n"
    "app = find_app(sys.argv[1])\n"
    "if not isinstance(app, Celery):\n"
    "    raise SystemExit('%s is not a Celery app: %r' % (sys.argv[1], app))\n"
)


class RestartFailed(Exception):
    """A restart that cannot go on; the message says what a human can do."""


def process_running(pid):
    """Whether ``pid`` is a live process (a zombie waiting for systemd to reap it is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def mask_url_passwords(text):
    return URL_PASSWORD.sub(r"\1********@", text)


def credential_secrets(value):
    """What to mask of a credential: its whole value and, for a URL, its password as written and decoded."""
    secrets = {value.strip()}
    for url in value.split(";"):
        try:
            password = urlsplit(url.strip()).password
        except ValueError:
            continue
        if password:
            secrets.update((password, unquote(password)))
    return {secret for secret in secrets if len(secret) >= MIN_MASKED_LENGTH}


def unit_name(name):
    return name if "." in name else name + ".service"


def read_marker(path):
    """The record of a readiness marker (or the wrapper's other records), or {} while there is none."""
    try:
        with open(path) as marker:
            record = json.load(marker)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def start_canary_failure(journal):
    """From a worker's journal, why its start canary failed (its last "start canary:" line) as ": WHY", else ""."""
    lines = [line.partition(START_CANARY_LOG)[2] for line in journal.splitlines() if START_CANARY_LOG in line]
    return ": its start canary failed: " + lines[-1].strip().rstrip(".") if lines else ""


def runs_new_process(state, old_pid):
    """Whether the unit is active with a main process other than ``old_pid``."""
    return state.main_pid not in (None, old_pid) and state.active_state == "active"


class WorkerRestart:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.unit = unit_name(module.params["name"])
        self.other_slot = unit_name(module.params["other_slot"]) if module.params["other_slot"] else None
        self.systemctl = module.get_bin_path("systemctl", required=True)
        self.result = dict(
            changed=False,
            unit=self.unit,
            previous_unit=None,
            old_pid=None,
            new_pid=None,
            was_running=False,
            signalled=False,
            killed=False,
            drain_seconds=0.0,
            ready_seconds=0.0,
            generation=None,
            stale=False,
            leases=None,
            start_canary_seconds=None,
            rolled_back=False,
        )

    def state(self, unit):
        """The unit's state now, from one systemctl show."""
        try:
            return _systemd.show_unit(self.module.run_command, self.systemctl, unit)
        except _systemd.UnitQueryError as error:
            raise RestartFailed(str(error)) from error

    def loaded_state(self, unit):
        state = self.state(unit)
        if not state.loaded:
            raise RestartFailed(
                "unit %s is not loaded (LoadState=%s): is the name right and the unit installed?"
                % (unit, state.load_state or "unknown")
            )
        return state

    def systemctl_run(self, unit, *args):
        rc, _out, err = self.module.run_command([self.systemctl, *args, "--", unit])
        if rc != 0:
            raise RestartFailed("systemctl %s %s failed (rc=%d): %s" % (" ".join(args), unit, rc, err.strip()))

    def journal(self, unit):
        journalctl = self.module.get_bin_path("journalctl")
        if not journalctl:
            return ""
        return mask_url_passwords(self.module.run_command([journalctl, "--no-pager", "-n", "30", "-u", unit])[1])

    def run(self):
        units = [self.unit] + ([self.other_slot] if self.other_slot else [])
        for unit in units:
            self.protect_credentials(unit)
        self.reload_changed_units(units)
        if self.other_slot:
            return self.run_slots()
        self.restart_in_place(self.loaded_state(self.unit))
        return self.result

    def protect_credentials(self, unit):
        """Mask the unit's secrets (its LoadCredential= files, readable by root) in all the module returns."""
        for credential in _systemd.load_credentials(self.unit_text(unit)):
            path = credential.partition(":")[2]
            try:
                with open(path) as source:
                    self.module.no_log_values.update(credential_secrets(source.read()))
            except (OSError, UnicodeDecodeError):
                continue

    def unit_text(self, unit):
        rc, text, _err = self.module.run_command([self.systemctl, "cat", "--", unit])
        return text if rc == 0 else ""

    def reload_changed_units(self, units):
        """Units whose files changed since systemd loaded them (a run interrupted before its reload) would start
        with their old definition."""
        if any(self.state(unit).need_daemon_reload for unit in units) and not self.module.check_mode:
            self.daemon_reload()

    def daemon_reload(self):
        rc, _out, err = self.module.run_command([self.systemctl, "daemon-reload"])
        if rc != 0:
            raise RestartFailed("systemctl daemon-reload failed (rc=%d): %s" % (rc, err.strip()))

    def restart_in_place(self, before):
        """The drain strategy: SIGTERM, wait for the running tasks, start the same unit, confirm ready."""
        self.result["old_pid"] = before.main_pid
        self.result["was_running"] = before.running
        if self.params["state"] == "started" and before.running:
            self.check_generation(before)
            return
        self.result["changed"] = True
        # Settle how readiness is checked before anything is sent.
        ready = self.readiness_check(before)
        if self.module.check_mode:
            return
        self.check_app(before)
        snapshot = self.capture(before)
        if before.main_pid is not None:
            self.drain(before)
        if self.rollback_of(before.unit).remove_drop_in():
            self.daemon_reload()
        self.start(before.unit, before.main_pid)
        try:
            new_pid = self.wait_for_new_main_pid(before.unit, before.main_pid)
            self.wait_ready(before.unit, new_pid, ready)
            self.confirm_generation(before, new_pid)
        except RestartFailed as failure:
            if isinstance(snapshot, _rollback.SnapshotError):
                raise RestartFailed(
                    "%s\nThe previous generation cannot be brought back: %s" % (failure, snapshot)
                ) from failure
            if snapshot is None:
                raise
            self.roll_back(before, snapshot, ready, failure)
        if isinstance(snapshot, _rollback.Snapshot):
            snapshot.remove()

    # --- bringing the previous generation back (drain) ---

    def rollback_of(self, unit):
        return _rollback.Snapshot(unit, run_root=RUNTIME_ROOT, proc_root=PROC_ROOT)

    def capture(self, state):
        """What the running worker started with, before it drains: a Snapshot, the SnapshotError saying why there is
        none, or None when there is nothing to bring back."""
        if not self.params["rollback"] or not state.running or not state.runtime_directories:
            return None
        snapshot = self.rollback_of(state.unit)
        try:
            snapshot.capture(state.main_pid, state.runtime_directories[0], state.group)
        except _rollback.SnapshotError as error:
            return error
        return snapshot

    def roll_back(self, state, snapshot, ready, failure):
        """The new process did not get ready: stop it and start what ran before, from the snapshot."""
        self.systemctl_run(state.unit, "stop")
        snapshot.install_drop_in()
        self.daemon_reload()
        self.systemctl_run(state.unit, "reset-failed")
        try:
            self.systemctl_run(state.unit, "start")
            pid = self.wait_for_new_main_pid(state.unit, None)
            self.wait_ready(state.unit, pid, ready)
        except RestartFailed as second:
            raise RestartFailed(
                "%s\nBringing the previous generation back failed too: %s" % (failure, second)
            ) from failure
        self.result.update(new_pid=pid, generation=self.marker_generation(state, pid), rolled_back=True)
        raise RestartFailed(
            "%s\nRolled back: %s runs its previous generation again (main pid %d), from %s, until its next "
            "restart; a reboot would start the installed configuration. Fix the cause and run again."
            % (failure, state.unit, pid, snapshot.drop_in)
        ) from failure

    # --- generations ---

    def check_generation(self, state):
        """state=started on a running worker: does it run the desired generation? Reported, not acted on."""
        if not self.params["generation"]:
            return
        self.wait_ready(state.unit, state.main_pid, self.marker_check(state))
        running = self.marker_generation(state, state.main_pid)
        self.result["generation"] = running
        if running != self.params["generation"]:
            self.result.update(changed=True, stale=True)
        elif os.path.exists(self.rollback_of(state.unit).drop_in):
            # A rolled-back worker whose generation is the desired one again: what is installed is what runs.
            self.result["changed"] = True
            if not self.module.check_mode:
                self.clear_rollback(state.unit)

    def confirm_generation(self, state, pid):
        """After a start: the new process must run the generation the caller wrote."""
        if not self.params["generation"]:
            return
        running = self.marker_generation(state, pid)
        self.result["generation"] = running
        if running != self.params["generation"]:
            raise RestartFailed(
                "%s (main pid %d) started generation %s, not %s: the files it reads changed while it started "
                "(another run on this host?). Run again." % (state.unit, pid, running, self.params["generation"])
            )

    def marker_generation(self, state, pid):
        marker = read_marker(self.marker_path(state))
        return marker.get("generation") if marker.get("pid") == pid else None

    # --- the app check ---

    def check_app(self, state):
        """Import the Celery app the unit will run, as systemd will start it, before anything is stopped."""
        if not self.params["app_check"]:
            return
        argv = state.exec_start_argv
        app = _systemd.celery_app_argument(argv)
        if not argv or app is None:
            return
        python = os.path.join(os.path.dirname(argv[0]), "python")
        rc, out, err = self.module.run_command([*self.transient_command(state), python, "-c", APP_CHECK, app])
        if rc != 0:
            output = "\n".join((out + err).strip().splitlines()[-15:])
            raise RestartFailed(
                "%s cannot load its Celery app (-A %s) with its release, environment files and credentials "
                "(rc=%d); nothing was stopped or started:\n%s" % (state.unit, app, rc, mask_url_passwords(output))
            )

    # --- two slots ---

    def run_slots(self):
        """An instance with two slots: restart the current one in place (drain) or hand over."""
        if self.params["marker_path"] or self.params["node"]:
            raise RestartFailed(
                "marker_path and node cannot be used with other_slot: each slot has its own readiness marker "
                "(in its RuntimeDirectory) and node name (its --hostname)"
            )
        current, other = self.current_slot(self.loaded_state(self.unit), self.loaded_state(self.other_slot))
        self.result["unit"] = current.unit
        if self.params["strategy"] == "drain" or not current.running:
            # Nothing to hand over from: start (or drain-restart) the current slot where it is.
            self.refuse_two_running(current, other)
            self.restart_in_place(current)
        elif self.params["state"] == "restarted":
            self.hand_over(current, other)
            current, other = other, current
        else:
            self.result.update(old_pid=current.main_pid, was_running=True)
            self.check_generation(current)
        self.make_current(current.unit, other.unit)
        return self.result

    @staticmethod
    def current_slot(first, second):
        """(current, other): the slot enabled for boot; when that does not decide, the one running; else the first."""
        for decides in (lambda slot: slot.unit_file_state == "enabled", lambda slot: slot.running):
            if decides(first) != decides(second):
                return (first, second) if decides(first) else (second, first)
        return first, second

    @staticmethod
    def refuse_two_running(current, other):
        if other.running and current.running:
            raise RestartFailed(
                "both slots of the instance run: %s (current, enabled for boot) and %s (main pid %s). A handover that "
                "failed half-way leaves this; stop the one that should not run (systemctl stop), then run again."
                % (current.unit, other.unit, other.main_pid)
            )

    def make_current(self, current, other):
        """Exactly one slot is enabled for boot: the current one."""
        changes = []
        if self.state(current).unit_file_state != "enabled":
            changes.append(("enable", current))
        if self.state(other).unit_file_state == "enabled":
            changes.append(("disable", other))
        if changes:
            self.result["changed"] = True
        if not self.module.check_mode:
            for verb, unit in changes:
                self.systemctl_run(unit, verb)

    def hand_over(self, old, new):
        self.result.update(changed=True, old_pid=old.main_pid, was_running=True, unit=new.unit, previous_unit=old.unit)
        ready = self.readiness_check(new)
        if self.module.check_mode:
            return
        timeout = self.drain_timeout(old)
        self.check_app(new)
        self.wait_earlier_drain(new, timeout)
        self.refuse_two_running(old, self.state(new.unit))
        self.clear_rollback(new.unit)
        self.systemctl_run(new.unit, "start")
        try:
            new_pid = self.wait_for_new_main_pid(new.unit, None)
            self.wait_ready(new.unit, new_pid, ready)
            self.confirm_generation(new, new_pid)
        except RestartFailed as failure:
            self.systemctl_run(new.unit, "stop")
            # A slot that does not run is inactive, not failed (a start canary's exit): this run reports the failure.
            if self.state(new.unit).active_state == "failed":
                self.systemctl_run(new.unit, "reset-failed")
            raise RestartFailed(
                "%s\nThe handover did not happen: %s was stopped again, and %s (main pid %s) keeps running untouched."
                % (failure, new.unit, old.unit, old.main_pid)
            ) from failure
        self.systemctl_run(old.unit, "stop", "--no-block")
        self.result["signalled"] = True
        self.make_current(new.unit, old.unit)
        self.wait_drained(old, timeout, why=", after the handover to %s" % new.unit)
        self.clear_rollback(old.unit)

    def clear_rollback(self, unit):
        """A slot that is not running does not need the generation a failed drain brought back."""
        rollback = self.rollback_of(unit)
        if rollback.remove_drop_in():
            self.daemon_reload()
        rollback.remove()

    def wait_earlier_drain(self, slot, timeout):
        """A slot still draining from an earlier handover must be gone before it can be the new one."""
        if slot.active_state != "deactivating":
            return
        self.wait_drained(slot, timeout, why=", from an earlier handover; it must finish before the next handover")

    # --- one unit ---

    def drain_timeout(self, state):
        if self.params["drain_timeout"] is not None:
            return self.params["drain_timeout"]
        try:
            stop_timeout = state.stop_timeout
        except ValueError:
            raise RestartFailed(
                "%s has a TimeoutStopSec this module cannot read (%r): set drain_timeout (seconds to wait for "
                "running tasks)" % (state.unit, state.timeout_stop)
            ) from None
        if stop_timeout is None:
            raise RestartFailed(
                "%s has no TimeoutStopSec to drain within: set drain_timeout (seconds to wait for running tasks)"
                % state.unit
            )
        return stop_timeout

    def drain(self, before):
        """SIGTERM to the main process only (unless it is already being stopped), then wait for it."""
        timeout = self.drain_timeout(before)
        if before.active_state in _systemd.RUNNING_STATES:
            try:
                os.kill(before.main_pid, signal.SIGTERM)
                self.result["signalled"] = True
            except ProcessLookupError:
                pass  # it exited on its own meanwhile
        self.wait_drained(before, timeout, alone=True, afterwards=" and systemd will start it again once it exits")

    def wait_drained(self, before, timeout, alone=False, why="", afterwards=""):
        """Wait for an old worker that got SIGTERM to finish its running tasks and exit: its main process
        alone (a drain: systemd starts the unit again), or the whole unit (a slot being stopped).

        Without drain_timeout, the deadline follows the stop deadline the worker reports (STOP_DEADLINE).
        Once kill_after has passed (only if set), SIGKILL what is left of the unit and give it
        KILL_GRACE_SECONDS more. ``timeout`` seconds after the start, fail and leave it draining.
        """
        unit, pid = before.unit, before.main_pid
        reported = self.stop_deadline_path(before) if self.params["drain_timeout"] is None else None
        started = time.monotonic()
        while True:
            if alone:
                draining, main_pid = process_running(pid), pid
            else:
                state = self.state(unit)
                draining, main_pid = not state.stopped, state.main_pid
            if not draining:
                break
            if reported:
                record = read_marker(reported)
                if record.get("pid") == main_pid and isinstance(record.get("stop_by_monotonic"), (int, float)):
                    timeout = max(timeout, record["stop_by_monotonic"] - started)
            elapsed = time.monotonic() - started
            kill_after = self.params["kill_after"]
            if kill_after is not None and elapsed >= kill_after and not self.result["killed"]:
                self.systemctl_run(unit, "kill", "--kill-whom=all", "--signal=SIGKILL")
                self.result["killed"] = True
                timeout = max(timeout, elapsed + KILL_GRACE_SECONDS)
            if elapsed >= timeout:
                raise RestartFailed(
                    "%s (main pid %s) is still finishing its tasks %.0f s after SIGTERM%s (drain_timeout=%s). "
                    "Nothing was killed: it keeps draining%s. Wait, raise drain_timeout, or set kill_after to kill "
                    "what is left (its tasks then run again)." % (unit, main_pid, elapsed, why, timeout, afterwards)
                )
            time.sleep(POLL_SECONDS)
        self.result["drain_seconds"] = round(time.monotonic() - started, 3)

    def start(self, unit, old_pid):
        """Start the unit once, whatever systemd's Restart= is doing with it.

        After a clean exit a Restart=always unit waits RestartSec in SubState auto-restart, and
        systemd holds a plain start until that timer fires; a restart skips the wait. A unit that
        systemd already brought back needs nothing; a start of a running unit does nothing.
        """
        state = self.state(unit)
        if runs_new_process(state, old_pid):
            return
        self.systemctl_run(unit, "restart" if state.sub_state == "auto-restart" else "start")

    def wait_for_new_main_pid(self, unit, old_pid):
        """The start returns once systemd forked the process; read its main pid (Restart= may have
        started it already: systemctl start then did nothing, and the pid is still new)."""
        deadline = time.monotonic() + self.params["ready_timeout"]
        while True:
            state = self.state(unit)
            if runs_new_process(state, old_pid):
                self.result["new_pid"] = state.main_pid
                return state.main_pid
            if time.monotonic() > deadline:
                raise RestartFailed(
                    "%s has no new main process %.0f s after the start (ActiveState=%s, SubState=%s). Journal:\n%s"
                    % (unit, self.params["ready_timeout"], state.active_state, state.sub_state, self.journal(unit))
                )
            time.sleep(POLL_SECONDS)

    def readiness_check(self, state):
        """A function telling whether the process with a given pid is ready, or None (readiness=none)."""
        if self.params["readiness"] == "marker":
            return self.marker_check(state)
        if self.params["readiness"] == "ping":
            return self.ping_check(state)
        return None

    def wait_ready(self, unit, pid, ready):
        if ready is None:
            return
        readiness = self.params["readiness"]
        started = time.monotonic()
        deadline = started + self.params["ready_timeout"]
        while not ready(pid):
            if not process_running(pid) and not ready(pid):
                journal = self.journal(unit)
                raise RestartFailed(
                    "%s (main pid %d) ended before it reported ready%s. Journal:\n%s"
                    % (unit, pid, start_canary_failure(journal), journal)
                )
            if time.monotonic() > deadline:
                raise RestartFailed(
                    "%s (main pid %d) did not report ready (readiness=%s) within %.0f s (ready_timeout). Journal:\n%s"
                    % (unit, pid, readiness, self.params["ready_timeout"], self.journal(unit))
                )
            time.sleep(POLL_SECONDS)
        self.result["ready_seconds"] = round(time.monotonic() - started, 3)

    def stop_deadline_path(self, state):
        """Where the worker reports its stop deadline: beside its readiness marker; None without one."""
        try:
            return os.path.join(os.path.dirname(self.marker_path(state)), STOP_DEADLINE)
        except RestartFailed:
            return None

    def marker_path(self, state):
        if self.params["marker_path"]:
            return self.params["marker_path"]
        if not state.runtime_directories:
            raise RestartFailed(
                "%s has no RuntimeDirectory for a readiness marker: set marker_path, or readiness=ping or none"
                % state.unit
            )
        return os.path.join(RUNTIME_ROOT, state.runtime_directories[0], "ready")

    def marker_check(self, state):
        path = self.marker_path(state)

        def marker_names(pid):
            record = read_marker(path)
            if record.get("pid") != pid:
                return False
            self.result["leases"] = record.get("leases")
            self.result["start_canary_seconds"] = record.get("start_canary_seconds")
            return True

        return marker_names

    def transient_command(self, state):
        """systemd-run running a command as the unit would: its user, environment files, credentials and directory."""
        command = ["systemd-run", "--quiet", "--pipe", "--wait", "--collect"]
        properties = {"User": state.user, "Group": state.group, "WorkingDirectory": state.working_directory}
        for name, value in properties.items():
            if value:
                command += ["-p", "%s=%s" % (name, value)]
        for path in state.environment_files:
            command += ["-p", "EnvironmentFile=%s" % path]
        rc, unit_text, err = self.module.run_command([self.systemctl, "cat", "--", state.unit])
        if rc != 0:
            raise RestartFailed("systemctl cat %s failed (rc=%d): %s" % (state.unit, rc, err.strip()))
        for credential in _systemd.load_credentials(unit_text):
            command += ["-p", "LoadCredential=%s" % credential]
        return command

    def ping_check(self, state):
        argv = state.exec_start_argv
        if "worker" not in argv:
            raise RestartFailed("%s does not run `celery ... worker`: use readiness=marker or none" % state.unit)
        node = self.params["node"] or self.node_from(state)
        command = [*self.transient_command(state), *argv[: argv.index("worker")]]
        command += ["inspect", "ping", "-d", node, "--timeout", "1"]

        def node_answers(_pid):
            return self.module.run_command(command)[0] == 0

        return node_answers

    @staticmethod
    def node_from(state):
        argv = state.exec_start_argv
        for index, arg in enumerate(argv):
            if arg.startswith("--hostname="):
                return arg.split("=", 1)[1].replace("%h", socket.gethostname())
            if arg in ("-n", "--hostname") and index + 1 < len(argv):
                return argv[index + 1].replace("%h", socket.gethostname())
        raise RestartFailed("%s sets no --hostname: give the Celery node name in `node`" % state.unit)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["restarted", "started"], default="restarted"),
            strategy=dict(type="str", choices=["drain", "handover"], default="drain"),
            other_slot=dict(type="str", aliases=["handover_unit"]),
            drain_timeout=dict(type="float"),
            ready_timeout=dict(type="float", default=120),
            readiness=dict(type="str", choices=["marker", "ping", "none"], default="marker"),
            marker_path=dict(type="path"),
            node=dict(type="str"),
            kill_after=dict(type="float"),
            generation=dict(type="str"),
            app_check=dict(type="bool", default=True),
            rollback=dict(type="bool", default=True),
        ),
        required_if=[("strategy", "handover", ("other_slot",))],
        supports_check_mode=True,
    )
    for option in ("drain_timeout", "ready_timeout", "kill_after"):
        if module.params[option] is not None and module.params[option] <= 0:
            module.fail_json(msg="%s must be a positive number of seconds, got %s" % (option, module.params[option]))

    if module.params["generation"] and module.params["readiness"] != "marker":
        module.fail_json(msg="generation needs readiness=marker: the readiness marker records the running generation")

    restart = WorkerRestart(module)
    try:
        result = restart.run()
    except RestartFailed as error:
        module.fail_json(msg=str(error), **restart.result)
    if str(result["leases"]).startswith("fallback"):
        module.warn(
            "%s runs without visibility leases (%s): its visibility timeout is the longest task's"
            " (docs/delivery.md#visibility-leases-redis)" % (result["unit"], result["leases"])
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
