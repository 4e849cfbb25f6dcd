# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host lock's record and the rule that decides who holds it.

Private to this collection: the name starts with ``_`` and may change without notice. The
host_lock module (on the managed host) and its action plugin (on the controller) share it.

A record names the ansible-playbook run that holds the host: ``id`` (a digest of the fields that
identify that process), ``controller``, ``pid_namespace``, ``boot_id``, ``pid``, ``pid_start``
(the process's start as the kernel counts it, to tell a reused pid apart), ``user``,
``started`` (when that process started, ISO 8601), and what the host adds: ``taken`` and
``renewed`` (host epoch seconds) and ``lease_seconds``. A record without the host fields is an
identity.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os

IDENTITY_FIELDS = ("controller", "pid_namespace", "boot_id", "pid", "pid_start")
# Fields of the controller a record names; the same values mean the same process table.
CONTROLLER_FIELDS = ("controller", "pid_namespace", "boot_id")

ACQUIRE = "acquire"  # no record: take the host
RENEW = "renew"  # this run holds it already
TAKE_OVER = "take_over"  # the holder is gone: replace its record
HELD = "held"  # another run holds it


def identity_id(identity):
    """The run's id: the same for every task of one ansible-playbook process, different for any other."""
    text = "\0".join(str(identity.get(field, "")) for field in IDENTITY_FIELDS)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_controller(record, identity):
    """Whether RECORD was written by a run on the controller (and pid namespace, and boot) of IDENTITY."""
    return all(record.get(field) and record.get(field) == identity.get(field) for field in CONTROLLER_FIELDS)


def lease_end(record):
    return float(record.get("renewed", 0)) + float(record.get("lease_seconds", 0))


def decide(record, holder_id, now, take_over=None):
    """What a run with id HOLDER_ID may do with the host's current RECORD (None: no record) at NOW.

    Returns (action, reason). TAKE_OVER needs proof that the holder is gone: its lease ended,
    or the caller checked that its process no longer runs and names its id in TAKE_OVER (a
    compare-and-swap: a record renewed by another run since then has another id).
    """
    if record is None:
        return ACQUIRE, ""
    if record.get("id") == holder_id:
        return RENEW, ""
    if lease_end(record) <= now:
        return TAKE_OVER, "its lease ended at %s (host time) without renewal" % iso_time(lease_end(record))
    if take_over and take_over == record.get("id"):
        return TAKE_OVER, "its ansible-playbook process no longer runs on the controller"
    return HELD, ""


def new_record(identity, record, decision, now, lease_seconds):
    """The record to write for IDENTITY after DECISION (what decide() returned) on the current RECORD."""
    action, reason = decision
    written = dict(identity)
    written["id"] = identity_id(identity)
    written["taken"] = record["taken"] if action == RENEW else now
    written["renewed"] = now
    written["lease_seconds"] = lease_seconds
    if action == RENEW and record.get("took_over"):
        written["took_over"] = record["took_over"]
    elif action == TAKE_OVER:
        written["took_over"] = {"holder": describe(record), "id": record.get("id"), "reason": reason}
    return written


def iso_time(epoch):
    return datetime.datetime.fromtimestamp(float(epoch), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(record):
    """Who holds the host, in words: the ansible-playbook process, its user and controller, its start."""
    text = "ansible-playbook pid %s of user %s on controller %s, started %s" % (
        record.get("pid", "?"),
        record.get("user", "?"),
        record.get("controller", "?"),
        record.get("started") or "at an unknown time",
    )
    if "taken" in record:
        text += "; lock taken %s, renewed %s, lease until %s (host time)" % (
            iso_time(record["taken"]),
            iso_time(record.get("renewed", record["taken"])),
            iso_time(lease_end(record)),
        )
    return text


class LockFiles:
    """The record file and the mutex beside it, in a root-only directory.

    Every read-decide-write happens under an exclusive flock of ``mutex``; the record is
    replaced by a rename, so a reader never sees half a record.
    """

    def __init__(self, directory):
        self.directory = directory
        self.record_path = os.path.join(directory, "holder.json")
        self.mutex_path = os.path.join(directory, "mutex")
        self._mutex = None

    def __enter__(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._mutex = os.open(self.mutex_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._mutex, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        os.close(self._mutex)  # closing releases the flock
        self._mutex = None

    def read(self):
        """The current record, or None. A record that is not valid JSON counts as none: it can only
        come from a write interrupted before the rename, which this class never leaves."""
        try:
            with open(self.record_path) as handle:
                record = json.load(handle)
        except OSError as error:
            if error.errno == errno.ENOENT:
                return None
            raise
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def write(self, record):
        temporary = self.record_path + ".tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(record, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.record_path)

    def remove(self):
        os.unlink(self.record_path)
