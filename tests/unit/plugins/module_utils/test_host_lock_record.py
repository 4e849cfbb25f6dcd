"""Unit tests for plugins/module_utils/_host_lock.py: who holds a host, and the files that say it."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from ansible_collections.reliable.celery.plugins.module_utils import _host_lock

ME = {"controller": "ctl", "pid_namespace": "pid:[1]", "boot_id": "b1", "pid": 100, "pid_start": "500", "user": "ops"}
OTHER = dict(ME, pid=200, pid_start="700", user="deploy")


def record_of(identity: dict, renewed: float = 1000.0, lease: int = 60) -> dict:
    return _host_lock.new_record(identity, None, (_host_lock.ACQUIRE, ""), renewed, lease)


def test_the_id_is_the_same_for_one_process_and_differs_for_a_reused_pid() -> None:
    assert _host_lock.identity_id(ME) == _host_lock.identity_id(dict(ME, user="someone else"))
    assert _host_lock.identity_id(ME) != _host_lock.identity_id(dict(ME, pid_start="501"))
    assert _host_lock.identity_id(ME) != _host_lock.identity_id(dict(ME, controller="ctl2"))


def test_no_record_is_acquired() -> None:
    assert _host_lock.decide(None, "any", 1000.0) == (_host_lock.ACQUIRE, "")


def test_the_holder_renews_its_own_record() -> None:
    assert _host_lock.decide(record_of(ME), _host_lock.identity_id(ME), 1010.0)[0] == _host_lock.RENEW


def test_another_live_run_holds_the_host() -> None:
    assert _host_lock.decide(record_of(OTHER), _host_lock.identity_id(ME), 1059.0)[0] == _host_lock.HELD


def test_a_record_past_its_lease_is_taken_over() -> None:
    action, reason = _host_lock.decide(record_of(OTHER), _host_lock.identity_id(ME), 1060.0)
    assert action == _host_lock.TAKE_OVER
    assert "lease ended at 1970-01-01T00:17:40Z" in reason


def test_a_take_over_names_the_record_it_replaces() -> None:
    held = record_of(OTHER)
    action, reason = _host_lock.decide(held, _host_lock.identity_id(ME), 1001.0, take_over=held["id"])
    assert action == _host_lock.TAKE_OVER
    assert "no longer runs" in reason
    # A record renewed by a third run since the check has another id: it stays.
    third = record_of(dict(OTHER, pid=300))
    assert _host_lock.decide(third, _host_lock.identity_id(ME), 1001.0, take_over=held["id"])[0] == _host_lock.HELD


def test_a_renewal_keeps_when_the_lock_was_taken_and_what_it_took_over() -> None:
    held = record_of(OTHER)
    taken = _host_lock.new_record(ME, held, (_host_lock.TAKE_OVER, "gone"), 1005.0, 60)
    assert taken["took_over"] == {"holder": _host_lock.describe(held), "id": held["id"], "reason": "gone"}
    renewed = _host_lock.new_record(ME, taken, (_host_lock.RENEW, ""), 1030.0, 90)
    assert (renewed["taken"], renewed["renewed"], renewed["lease_seconds"]) == (1005.0, 1030.0, 90)
    assert renewed["took_over"] == taken["took_over"]
    assert renewed["id"] == _host_lock.identity_id(ME)


def test_a_holder_is_described_for_people() -> None:
    text = _host_lock.describe(dict(record_of(OTHER), started="2026-12-01T10:00:00Z"))
    assert text == (
        "ansible-playbook pid 200 of user deploy on controller ctl, started 2026-12-01T10:00:00Z; "
        "lock taken 1970-01-01T00:16:40Z, renewed 1970-01-01T00:16:40Z, lease until 1970-01-01T00:17:40Z (host time)"
    )


@pytest.mark.parametrize(
    ("changed", "same"),
    [({}, True), ({"controller": "ctl2"}, False), ({"pid_namespace": "pid:[2]"}, False), ({"boot_id": "b2"}, False)],
)
def test_same_controller_needs_host_pid_namespace_and_boot(changed: dict, same: bool) -> None:
    assert _host_lock.same_controller(dict(OTHER, **changed), ME) is same


def test_a_controller_without_a_host_name_is_never_the_same() -> None:
    assert not _host_lock.same_controller(dict(ME, controller=""), dict(ME, controller=""))


def test_the_files_round_trip_a_record_in_a_root_only_directory(tmp_path: Path) -> None:
    directory = tmp_path / "lock"
    with _host_lock.LockFiles(str(directory)) as files:
        assert files.read() is None
        files.write(record_of(ME))
        assert files.read() == record_of(ME)
        files.remove()
        assert files.read() is None
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    assert oct((directory / "mutex").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_a_record_that_is_no_json_object_counts_as_none(tmp_path: Path, text: str) -> None:
    (tmp_path / "holder.json").write_text(text)
    with _host_lock.LockFiles(str(tmp_path)) as files:
        assert files.read() is None


def _contend(directory: str, identity: dict, start: multiprocessing.synchronize.Event, results) -> None:
    start.wait()
    with _host_lock.LockFiles(directory) as files:
        record = files.read()
        decision = _host_lock.decide(record, _host_lock.identity_id(identity), 1000.0)
        if decision[0] != _host_lock.HELD:
            files.write(_host_lock.new_record(identity, record, decision, 1000.0, 60))
    results.put((identity["pid"], decision[0]))


def test_of_runs_that_start_at_once_exactly_one_acquires(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    runs = [dict(ME, pid=pid) for pid in range(1000, 1008)]
    processes = [context.Process(target=_contend, args=(str(tmp_path), run, start, results)) for run in runs]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(10)
    actions = [results.get(timeout=5)[1] for run in runs]
    assert sorted(actions) == [_host_lock.ACQUIRE] + [_host_lock.HELD] * 7
    assert not list(tmp_path.glob("*.tmp"))
    assert os.path.exists(tmp_path / "holder.json")
