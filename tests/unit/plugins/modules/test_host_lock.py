"""The host_lock module, run through main() on a lock directory under tmp_path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.reliable.celery.plugins.module_utils import _host_lock
from ansible_collections.reliable.celery.plugins.modules import host_lock as lock_module

ME = {"controller": "ctl", "pid_namespace": "pid:[1]", "boot_id": "b1", "pid": 100, "pid_start": "500", "user": "ops"}
OTHER = dict(ME, pid=200, pid_start="700", user="deploy")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(lock_module.time, "time", lambda: now[0])
    return now


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "run" / "lock"


@pytest.fixture
def module(directory: Path, clock: list[float], capsys: pytest.CaptureFixture[str]) -> Callable[..., dict]:
    """Run main() as HOLDER with these arguments; its result."""

    def run_main(holder: dict, **args: object) -> dict:
        with patch_module_args({"holder": holder, "path": str(directory), **args}), pytest.raises(SystemExit):
            lock_module.main()
        return json.loads(capsys.readouterr().out)

    return run_main


def on_disk(directory: Path) -> dict | None:
    path = directory / "holder.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_a_free_host_is_acquired_and_reports_no_change(module: Callable[..., dict], directory: Path) -> None:
    result = module(ME)
    assert (result["acquired"], result["action"], result["changed"]) == (True, "acquire", False)
    assert on_disk(directory) == result["holder"]
    assert result["holder"]["id"] == _host_lock.identity_id(ME)
    assert (result["holder"]["taken"], result["holder"]["lease_seconds"]) == (1000.0, 3600)


def test_the_same_run_renews_its_lease(module: Callable[..., dict], clock: list[float], directory: Path) -> None:
    module(ME, lease_seconds=60)
    clock[0] = 1050.0
    result = module(ME, lease_seconds=120)
    assert (result["acquired"], result["action"]) == (True, "renew")
    assert (on_disk(directory)["taken"], on_disk(directory)["renewed"], on_disk(directory)["lease_seconds"]) == (
        1000.0,
        1050.0,
        120,
    )


def test_another_run_is_told_who_holds_the_host_and_changes_nothing(
    module: Callable[..., dict], directory: Path
) -> None:
    held = module(OTHER)["holder"]
    result = module(ME)
    assert (result["acquired"], result["action"], result["holder"]) == (False, "held", held)
    assert "failed" not in result  # the action plugin decides and words the failure
    assert on_disk(directory) == held


def test_a_holder_past_its_lease_is_taken_over(
    module: Callable[..., dict], clock: list[float], directory: Path
) -> None:
    held = module(OTHER, lease_seconds=60)["holder"]
    clock[0] = 1060.0
    result = module(ME)
    assert (result["acquired"], result["action"]) == (True, "take_over")
    assert result["took_over"]["id"] == held["id"]
    assert "lease ended" in result["took_over"]["reason"]
    assert on_disk(directory)["id"] == _host_lock.identity_id(ME)


def test_take_over_replaces_only_the_record_it_names(module: Callable[..., dict], directory: Path) -> None:
    gone = module(OTHER)["holder"]
    assert module(ME, take_over="someone-else")["action"] == "held"
    result = module(ME, take_over=gone["id"])
    assert (result["acquired"], result["action"]) == (True, "take_over")
    assert on_disk(directory)["took_over"]["id"] == gone["id"]


def test_release_removes_only_the_runs_own_record(module: Callable[..., dict], directory: Path) -> None:
    module(ME)
    assert module(OTHER, state="released")["action"] == "none"
    assert on_disk(directory)["id"] == _host_lock.identity_id(ME)
    result = module(ME, state="released")
    assert (result["acquired"], result["action"]) == (True, "release")
    assert on_disk(directory) is None
    # A second release, and then another run, find a free host.
    assert module(ME, state="released")["action"] == "none"
    assert module(OTHER)["action"] == "acquire"


def test_check_mode_creates_nothing_on_a_host_never_locked(module: Callable[..., dict], directory: Path) -> None:
    result = module(ME, _ansible_check_mode=True)
    assert (result["acquired"], result["action"]) == (True, "none")
    assert not directory.exists()


def test_check_mode_reads_the_holder_and_writes_nothing(module: Callable[..., dict], directory: Path) -> None:
    held = module(OTHER)["holder"]
    assert module(ME, _ansible_check_mode=True)["action"] == "held"
    assert module(OTHER, _ansible_check_mode=True, state="released")["action"] == "release"
    assert on_disk(directory) == held


def test_a_lease_below_one_second_is_refused(module: Callable[..., dict], directory: Path) -> None:
    result = module(ME, lease_seconds=0)
    assert result["failed"]
    assert result["msg"] == "lease_seconds must be a whole number >= 1, got 0"
    assert not directory.exists()


def test_a_lock_directory_it_cannot_create_fails_naming_it(module: Callable[..., dict], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = module(ME, path=str(tmp_path / "file" / "lock"))
    assert result["failed"]
    assert result["msg"].startswith("cannot use the host lock in %s/file/lock: " % tmp_path)
