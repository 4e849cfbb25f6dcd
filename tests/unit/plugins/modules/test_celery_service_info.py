"""The celery_service_info module, run through main() on directories under tmp_path."""

from __future__ import annotations

import getpass
import grp
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.reliable.celery.plugins.modules import celery_service_info as info_module


@pytest.fixture
def module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., dict]:
    """Run main() with these arguments over an install directory under tmp_path; its result."""

    def run_main(**args: object) -> dict:
        defaults = {
            "python": sys.executable,
            "user": "root",
            "group": "root",
            "releases_dir": str(tmp_path / "opt" / "releases"),
            "install_dir": str(tmp_path / "opt"),
            "credentials_dir": str(tmp_path / "credentials"),
        }
        with patch_module_args({**defaults, **args}), pytest.raises(SystemExit):
            info_module.main()
        return json.loads(capsys.readouterr().out)

    return run_main


def test_a_fresh_host_has_no_releases_credentials_or_paths(module: Callable[..., dict], tmp_path: Path) -> None:
    result = module(paths=[str(tmp_path / "missing")])
    assert result["changed"] is False
    assert result["python"] == {
        "version": "%d.%d.%d" % sys.version_info[:3],
        "machine": os.uname().machine,
    }
    assert result["paths"] == {str(tmp_path / "missing"): {"exists": False, "isdir": False}}
    for key in (
        "releases", "release_markers", "stale_builds", "old_installers", "old_requirements", "credentials",
        "packages_missing",
    ):  # fmt: skip
        assert result[key] == [], key


def test_listed_dirs_give_the_names_of_their_files(module: Callable[..., dict], tmp_path: Path) -> None:
    instances = tmp_path / "worker-instances"
    instances.mkdir()
    for name in ("b.env", "a.env", ".hidden.env"):
        (instances / name).write_text("")
    (instances / "not-a-file.env").mkdir()
    (instances / "link.env").symlink_to(instances / "a.env")
    result = module(listed_dirs=[str(instances), str(tmp_path / "missing")])
    assert result["listed_files"] == {str(instances): [".hidden.env", "a.env", "b.env"], str(tmp_path / "missing"): []}


def test_accounts_are_getent_fields_or_none(module: Callable[..., dict]) -> None:
    result = module(user=getpass.getuser(), group=grp.getgrgid(os.getgid()).gr_name)
    assert result["user"][1:3] == [str(os.getuid()), str(os.getgid())]
    assert len(result["user"]) == 6
    assert result["group"][1] == str(os.getgid())
    missing = module(user="no-such-user-rc", group="no-such-group-rc")
    assert (missing["user"], missing["group"]) == (None, None)


def test_releases_are_listed_with_the_markers_of_the_complete_ones(module: Callable[..., dict], tmp_path: Path) -> None:
    releases = tmp_path / "opt" / "releases"
    for name in ("complete", "partial", "legacy"):
        (releases / name).mkdir(parents=True)
    (releases / "complete" / ".release.json").write_text("{}")
    (releases / "legacy" / ".release.json").write_text("{}")
    (releases / "legacy" / "app-requirements.txt").write_text("--index-url https://token@index\n")
    (releases / "a-file").write_text("")
    (tmp_path / "opt" / ".build-partial").mkdir()
    (tmp_path / "opt" / "current").symlink_to(releases / "complete")

    result = module()
    assert result["releases"] == [str(releases / name) for name in ("complete", "legacy", "partial")]
    assert [marker["path"] for marker in result["release_markers"]] == [
        str(releases / "complete" / ".release.json"),
        str(releases / "legacy" / ".release.json"),
    ]
    assert all(isinstance(marker["mtime"], float) for marker in result["release_markers"])
    assert result["stale_builds"] == [str(tmp_path / "opt" / ".build-partial")]
    assert result["old_requirements"] == [str(releases / "legacy" / "app-requirements.txt")]


def test_installers_but_the_one_to_keep_are_old(module: Callable[..., dict], tmp_path: Path) -> None:
    installers = tmp_path / "opt" / "installers"
    for name in ("uv-0.13.8", "uv-0.13.9", "uv-0.14.0"):
        (installers / name).mkdir(parents=True)
    (installers / "a-file").write_text("")
    kept = str(installers / "uv-0.13.9")
    result = module(installer_dir=kept + "/")
    assert result["old_installers"] == [str(installers / "uv-0.13.8"), str(installers / "uv-0.14.0")]
    assert module(installer_dir=str(tmp_path / "missing" / "uv-0.13.9"))["old_installers"] == []


def test_paths_are_not_followed(module: Callable[..., dict], tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o751)
    (tmp_path / "link").symlink_to(home)
    result = module(paths=[str(home), str(tmp_path / "link")])
    found = result["paths"][str(home)]
    assert (found["exists"], found["isdir"], found["mode"]) == (True, True, "0751")
    assert found["owner"] == getpass.getuser()
    link = result["paths"][str(tmp_path / "link")]
    assert (link["exists"], link["isdir"]) == (True, False)


@pytest.mark.parametrize(
    ("mode", "service", "may_enter"),
    [
        (0o700, ("owner", "other"), True),
        (0o700, ("other", "group"), False),
        (0o710, ("other", "group"), True),
        (0o710, ("other", "other"), False),
        (0o601, ("other", "other"), True),
        (0o600, ("owner", "group"), False),
    ],
)
def test_whether_the_service_may_enter_follows_the_execute_bit_that_applies_to_it(
    module: Callable[..., dict], tmp_path: Path, mode: int, service: tuple[str, str], may_enter: bool
) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    directory.chmod(mode)
    names = {"owner": getpass.getuser(), "group": grp.getgrgid(os.getgid()).gr_name, "other": "no-such-account-rc"}
    user, group = service
    result = module(user=names[user], group=names[group], paths=[str(directory)])
    assert result["paths"][str(directory)]["service_may_enter"] is may_enter


def test_credentials_are_named(module: Callable[..., dict], tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "broker_url").write_text("secret")
    (credentials / "a-directory").mkdir()
    assert module()["credentials"] == ["broker_url"]


def test_files_have_the_checksum_ansible_compares_and_links_their_target(
    module: Callable[..., dict], tmp_path: Path
) -> None:
    settings = tmp_path / "worker-settings.json"
    settings.write_text("{}\n")
    settings.chmod(0o640)
    (tmp_path / "current").symlink_to(tmp_path / "releases" / "abc")
    result = module(paths=[str(settings), str(tmp_path / "current")])
    found = result["paths"][str(settings)]
    assert (found["checksum"], found["mode"]) == (hashlib.sha1(b"{}\n").hexdigest(), "0640")  # noqa: S324
    assert result["paths"][str(tmp_path / "current")]["target"] == str(tmp_path / "releases" / "abc")


def test_packages_dpkg_has_not_installed_are_missing(
    module: Callable[..., dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = tmp_path / "status"
    status.write_text(
        "Package: python3-venv\nStatus: install ok installed\nVersion: 3.11.2-1+b1\n\n"
        "Package: python3-pip\nStatus: deinstall ok config-files\n\n"
        "Package: acl\nStatus: hold ok installed\n"
    )
    monkeypatch.setattr(info_module, "DPKG_STATUS", str(status))
    assert module(packages=["python3-venv", "python3-pip", "acl", "python3-dev"])["packages_missing"] == [
        "python3-dev",
        "python3-pip",
    ]
    assert module()["packages_missing"] == []


def test_processes_are_command_lines(module: Callable[..., dict]) -> None:
    result = module()
    mine = " ".join(Path(f"/proc/{os.getpid()}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0"))
    assert mine in result["processes"]


def test_a_python_that_cannot_run_fails_naming_the_variable(module: Callable[..., dict], tmp_path: Path) -> None:
    result = module(python=str(tmp_path / "python3.99"), python_variable="celery_worker_python")
    assert result["failed"] is True
    assert result["msg"].startswith(f"celery_worker_python: {tmp_path / 'python3.99'} cannot run on this host")


def test_without_an_app_path_there_is_no_app_directory(module: Callable[..., dict]) -> None:
    assert module()["app_directory"] is None


def app_version(directory: Path, version: str) -> Path:
    """An app directory as a team's deploy role leaves it: a package, its bytecode cache, a git checkout."""
    package = directory / "proj"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text(f"VERSION = {version!r}\n")
    (directory / ".git").mkdir()
    return directory


def test_an_app_directory_has_a_digest_that_any_write_into_its_code_changes(
    module: Callable[..., dict], tmp_path: Path
) -> None:
    app = app_version(tmp_path / "srv" / "app" / "releases" / "v1", "1")
    first = module(app_path=str(app))["app_directory"]
    assert (first["exists"], first["isdir"], first["links"], first["files"]) == (True, True, [], 1)

    (app / "proj" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"bytecode")
    (app / ".git" / "FETCH_HEAD").write_text("fetched\n")
    assert module(app_path=str(app))["app_directory"] == first  # Python's cache and git's own files are not code

    (app / "proj" / "tasks.py").write_text("")
    added = module(app_path=str(app))["app_directory"]
    assert (added["files"], added["tree_sha256"] != first["tree_sha256"]) == (2, True)
    os.utime(app / "proj" / "tasks.py", ns=(1, 1))  # rewritten with the same bytes
    assert module(app_path=str(app))["app_directory"]["tree_sha256"] != added["tree_sha256"]


def test_an_app_path_through_a_link_names_the_link_and_reads_its_target(
    module: Callable[..., dict], tmp_path: Path
) -> None:
    app = app_version(tmp_path / "releases" / "v1", "1")
    (tmp_path / "current").symlink_to(app)
    through_link = module(app_path=str(tmp_path / "current"))["app_directory"]
    assert through_link["links"] == [str(tmp_path / "current")]
    assert through_link["isdir"]
    assert through_link["tree_sha256"] == module(app_path=str(app))["app_directory"]["tree_sha256"]
    missing = module(app_path=str(tmp_path / "missing"))["app_directory"]
    assert (missing["exists"], missing["isdir"], "tree_sha256" in missing) == (False, False, False)


def test_releases_built_from_the_app_directory_before_it_changed_are_named(
    module: Callable[..., dict], tmp_path: Path
) -> None:
    app = app_version(tmp_path / "srv" / "v1", "1")
    releases = tmp_path / "opt" / "releases"
    digest = module(app_path=str(app))["app_directory"]["tree_sha256"]
    for name, recorded in {"same": (str(app), digest), "other-app": ("/srv/v0", "0" * 64)}.items():
        (releases / name).mkdir(parents=True)
        manifest = {"app_path": recorded[0], "app_tree_sha256": recorded[1]}
        (releases / name / ".release.json").write_text(json.dumps(manifest))
    assert module(app_path=str(app))["app_directory"]["changed_since"] == []

    (app / "proj" / "__init__.py").write_text("VERSION = '1-edited'\n")
    assert module(app_path=str(app))["app_directory"]["changed_since"] == [str(releases / "same")]


def test_a_release_marker_names_its_app_directory(module: Callable[..., dict], tmp_path: Path) -> None:
    releases = tmp_path / "opt" / "releases"
    for name, manifest in {"wheel": "{}", "code": '{"app_path": "/srv/app/v1", "app_tree_sha256": "ab"}'}.items():
        (releases / name).mkdir(parents=True)
        (releases / name / ".release.json").write_text(manifest)
    markers = {Path(marker["path"]).parent.name: marker for marker in module()["release_markers"]}
    assert (markers["code"]["app_path"], markers["code"]["app_tree_sha256"]) == ("/srv/app/v1", "ab")
    assert (markers["wheel"]["app_path"], markers["wheel"]["app_tree_sha256"]) == ("", "")
