"""Finishes a release's virtualenv after its install, run by the release's own Python (tasks/build.yml):
removes what the installer left in it, writes the wrapper's modules into its site-packages, puts the
app directory on its import path when there is one, and checks that the packages the service imports
are installed (find_spec: no app code runs, which may need the environment file). One remote task
instead of one per file.

Reads a JSON document from stdin: ``leftovers`` (paths to remove), ``files`` (module file name ->
content), ``app_path`` ('' for none), ``import_check`` (top-level package names). Exits non-zero
naming what is missing."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import sysconfig

APP_PATH_FILE = "reliable_celery_app_path.pth"


def finish(
    site_packages: str, leftovers: list[str], files: dict[str, str], app_path: str, import_check: list[str]
) -> list[str]:
    """Remove the LEFTOVERS (files), write FILES and the app path file into SITE_PACKAGES (mode 0644); return
    the names of IMPORT_CHECK that the interpreter cannot find."""
    for path in leftovers:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    for name, content in files.items():
        _write(os.path.join(site_packages, name), content)
    if app_path:
        _write(os.path.join(site_packages, APP_PATH_FILE), app_path + "\n")
        sys.path.append(app_path)
    return [name for name in import_check if importlib.util.find_spec(name) is None]


def _write(path: str, content: str) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w", encoding="utf-8") as file:
        file.write(content)
    os.chmod(path, 0o644)


def main() -> None:
    request = json.load(sys.stdin)
    missing = finish(
        sysconfig.get_paths()["purelib"],
        request["leftovers"],
        request["files"],
        request["app_path"],
        request["import_check"],
    )
    if missing:
        sys.exit("not installed in the release: " + ", ".join(missing))


if __name__ == "__main__":
    main()
