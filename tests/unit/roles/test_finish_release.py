"""How a release's virtualenv is finished after its install (roles/celery_base/files/finish_release.py)."""

from __future__ import annotations

import importlib.util
import json
import stat
import subprocess
import sys
from pathlib import Path

FINISH_RELEASE = Path(__file__).parents[3] / "roles" / "celery_base" / "files" / "finish_release.py"
spec = importlib.util.spec_from_file_location("finish_release", FINISH_RELEASE)
finish_release = importlib.util.module_from_spec(spec)
spec.loader.exec_module(finish_release)


def test_leftovers_go_modules_and_the_app_path_are_written_readable_by_all_and_the_app_is_found(
    tmp_path, monkeypatch
) -> None:
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    (tmp_path / ".lock").write_text("")
    app = tmp_path / "app"
    (app / "proj_app_under_test").mkdir(parents=True)
    (app / "proj_app_under_test" / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "path", list(sys.path))

    missing = finish_release.finish(
        str(site_packages),
        [str(tmp_path / ".lock"), str(tmp_path / "CACHEDIR.TAG")],
        {"wrapper_a.py": "A = 1\n"},
        str(app),
        ["json", "proj_app_under_test"],
    )

    assert missing == []
    assert not (tmp_path / ".lock").exists()
    assert (site_packages / "wrapper_a.py").read_text() == "A = 1\n"
    assert (site_packages / "reliable_celery_app_path.pth").read_text() == f"{app}\n"
    for name in ("wrapper_a.py", "reliable_celery_app_path.pth"):
        assert stat.S_IMODE((site_packages / name).stat().st_mode) == 0o644


def test_missing_packages_are_named_and_no_app_path_file_without_an_app_path(tmp_path) -> None:
    missing = finish_release.finish(str(tmp_path), [], {}, "", ["json", "no_such_package_here", "nor_this_one"])
    assert missing == ["no_such_package_here", "nor_this_one"]
    assert list(tmp_path.iterdir()) == []


def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)  # noqa: S603 - fixed commands


def test_run_as_a_script_it_fails_naming_what_is_missing(tmp_path) -> None:
    """As tasks/build.yml runs it: the code as -c, the request on stdin, into the interpreter's own site-packages
    (a virtualenv here)."""
    assert run(sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")).returncode == 0
    python = str(tmp_path / "venv" / "bin" / "python")
    request = {
        "leftovers": [],
        "files": {"wrapper_b.py": "B = 2\n"},
        "app_path": "",
        "import_check": ["wrapper_b", "absent_pkg"],
    }
    result = run(python, "-c", FINISH_RELEASE.read_text(), stdin=json.dumps(request))
    assert result.returncode == 1
    assert result.stderr.strip() == "not installed in the release: absent_pkg"
    site_packages = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    assert Path(site_packages, "wrapper_b.py").read_text() == "B = 2\n"
