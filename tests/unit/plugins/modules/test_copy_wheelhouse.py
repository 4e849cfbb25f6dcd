"""copy_wheelhouse: the action plugin's reading and packing of the wheelhouse, and the module's main() on a
destination under tmp_path, as the plugin calls it (first without the archive, then with it when asked)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
from pathlib import Path

import pytest
from ansible.errors import AnsibleActionFail
from ansible.module_utils.testing import patch_module_args
from ansible_collections.reliable.celery.plugins.action import copy_wheelhouse as action
from ansible_collections.reliable.celery.plugins.modules import copy_wheelhouse as module

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    directory = tmp_path / "wheelhouse"
    directory.mkdir()
    (directory / "celery-5.7.0-py3-none-any.whl").write_bytes(b"celery" * 1000)
    (directory / "kombu-5.7.0-py3-none-any.whl").write_bytes(b"kombu" * 1000)
    (directory / ".DS_Store").write_bytes(b"not a wheel")
    (directory / "subdirectory").mkdir()
    return directory


def copy(src: Path, dest: Path, capsys: pytest.CaptureFixture[str], *, check_mode: bool = False, **options) -> dict:
    """One task: the module without the archive, and with it when the module asks, as the action plugin runs them."""
    args = {"src": str(src), "dest": str(dest), "owner": OWNER, "group": GROUP, "wheels": action.wheelhouse_files(src)}
    args.update(options)
    if check_mode:
        args["_ansible_check_mode"] = True
    answer = run_module(args, capsys)
    if answer.get("failed") or not answer["archive_needed"] or check_mode:
        return answer
    archive = src.parent / "sent.tar"
    action.write_archive(str(src), answer["copied"], str(archive))
    return run_module({**args, "archive": str(archive)}, capsys)


def run_module(args: dict, capsys: pytest.CaptureFixture[str]) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def contents(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_wheelhouse_is_its_regular_files_with_their_checksums(wheelhouse: Path) -> None:
    files = action.wheelhouse_files(str(wheelhouse))
    assert sorted(files) == ["celery-5.7.0-py3-none-any.whl", "kombu-5.7.0-py3-none-any.whl"]
    assert all(len(checksum) == 64 for checksum in files.values())
    with pytest.raises(AnsibleActionFail, match="no directory on the controller"):
        action.wheelhouse_files(str(wheelhouse / "missing"))


def test_a_first_copy_sends_every_wheel_and_a_second_sends_nothing(
    wheelhouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "build" / "wheelhouse"
    first = copy(wheelhouse, dest, capsys, mode="0600", directory_mode="0700")
    assert (first["changed"], first["archive_needed"]) == (True, True)
    assert first["copied"] == ["celery-5.7.0-py3-none-any.whl", "kombu-5.7.0-py3-none-any.whl"]
    assert contents(dest) == {name: (wheelhouse / name).read_bytes() for name in first["copied"]}
    assert (mode(dest), {mode(path) for path in dest.iterdir()}) == (0o700, {0o600})

    second = copy(wheelhouse, dest, capsys, mode="0600", directory_mode="0700")
    assert (second["changed"], second["archive_needed"], second["copied"], second["removed"]) == (False, False, [], [])


def test_a_changed_wheel_alone_is_sent_and_files_the_wheelhouse_lacks_go(
    wheelhouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "wheelhouse-on-host"
    copy(wheelhouse, dest, capsys)
    (wheelhouse / "kombu-5.7.0-py3-none-any.whl").write_bytes(b"kombu 5.7.1")
    (dest / "old-1.0-py3-none-any.whl").write_bytes(b"old")
    (dest / "kept-directory").mkdir()

    answer = copy(wheelhouse, dest, capsys)
    assert (answer["changed"], answer["copied"], answer["removed"]) == (
        True,
        ["kombu-5.7.0-py3-none-any.whl"],
        ["old-1.0-py3-none-any.whl"],
    )
    assert sorted(contents(dest)) == ["celery-5.7.0-py3-none-any.whl", "kombu-5.7.0-py3-none-any.whl"]
    assert (dest / "kombu-5.7.0-py3-none-any.whl").read_bytes() == b"kombu 5.7.1"
    assert (dest / "kept-directory").is_dir()
    assert mode(dest / "kombu-5.7.0-py3-none-any.whl") == 0o644


def test_check_mode_reports_the_change_and_writes_nothing(
    wheelhouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "wheelhouse-on-host"
    answer = copy(wheelhouse, dest, capsys, check_mode=True)
    assert answer["archive_needed"] is True
    assert not dest.exists()

    copy(wheelhouse, dest, capsys)
    (dest / "old-1.0-py3-none-any.whl").write_bytes(b"old")
    answer = copy(wheelhouse, dest, capsys, check_mode=True)
    assert (answer["changed"], answer["archive_needed"], answer["removed"]) == (
        True,
        False,
        ["old-1.0-py3-none-any.whl"],
    )
    assert (dest / "old-1.0-py3-none-any.whl").exists()


def test_a_wheel_that_changed_on_the_controller_while_it_was_sent_fails_and_leaves_no_partial_file(
    wheelhouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "wheelhouse-on-host"
    args = {"src": str(wheelhouse), "dest": str(dest), "owner": OWNER, "group": GROUP}
    wheels = action.wheelhouse_files(str(wheelhouse))
    (wheelhouse / "celery-5.7.0-py3-none-any.whl").write_bytes(b"rebuilt meanwhile")
    archive = tmp_path / "sent.tar"
    action.write_archive(str(wheelhouse), sorted(wheels), str(archive))
    answer = run_module({**args, "wheels": wheels, "archive": str(archive)}, capsys)
    assert answer["failed"] is True
    assert "celery-5.7.0-py3-none-any.whl changed on the controller while it was sent" in answer["msg"]
    assert not [path for path in dest.iterdir() if path.name.startswith(".")]
