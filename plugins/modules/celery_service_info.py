#!/usr/bin/python
# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: celery_service_info
short_description: Read, in one call, what the reliable.celery roles need to know about a host before they change it
version_added: 0.1.0
description:
  - Reads the service's account, the directories and files it uses, the Python that builds its releases, its
    releases and credentials on the host, and which packages it needs are missing. The C(celery_base) role calls it
    once per service and run, instead of about twenty separate reads (C(getent), C(stat), C(find), C(ps)), and
    skips writing a file that already has the wanted content, owner, group and mode; each remote task costs a Python
    start on the host, and a run that changes nothing is mostly such reads and writes.
  - Changes nothing. A path that does not exist is reported as missing, never created.
author:
  - reliable.celery maintainers (@reliable-celery)
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
options:
  python:
    description:
      - The Python that builds the releases; its version and machine are returned as RV(python).
    type: path
    required: true
  python_variable:
    description:
      - The variable that set O(python), named when it cannot run.
    type: str
    default: python
  user:
    description:
      - The service user, looked up as C(getent passwd) would.
    type: str
    required: true
  group:
    description:
      - The service group, looked up as C(getent group) would.
    type: str
    required: true
  paths:
    description:
      - Paths whose status is returned as RV(paths), without following a final symbolic link (directories the role
        checks or creates, files it writes, links it points).
    type: list
    elements: path
    default: []
  listed_dirs:
    description:
      - Directories whose files' names are returned as RV(listed_files) (files the calling role writes there, some
        of which it may have to remove).
    type: list
    elements: path
    default: []
  releases_dir:
    description:
      - The directory of the virtualenv releases.
    type: path
    required: true
  install_dir:
    description:
      - The directory above O(releases_dir), where a build directory C(.build-*) of an interrupted run may remain.
    type: path
    required: true
  installer_dir:
    description:
      - The directory of the installer to keep (uv, installed once per version); the other directories beside it
        are old versions, returned as RV(old_installers). Empty for none.
    type: str
    default: ""
  credentials_dir:
    description:
      - The directory of the service's credential files.
    type: path
    required: true
  packages:
    description:
      - Debian packages the service needs; those not installed are returned as RV(packages_missing).
    type: list
    elements: str
    default: []
  app_path:
    description:
      - A directory of app code that another role put on the host, read as RV(app_directory); empty for none.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Read the service's state on the host
  reliable.celery.celery_service_info:
    python: /usr/bin/python3
    user: celery
    group: celery
    paths: [/var/lib/celery, /etc/celery]
    releases_dir: /opt/celery/releases
    install_dir: /opt/celery
    credentials_dir: /etc/celery/credentials/worker
    packages: [python3-venv]
  register: service_host
"""

RETURN = r"""
python:
  description: The version and machine of O(python).
  returned: success
  type: dict
  sample: {"version": "3.11.2", "machine": "x86_64"}
user:
  description: The fields of the user's C(getent passwd) entry after its name (password, uid, gid, gecos, home,
    shell), or null when the user does not exist.
  returned: success
  type: list
  elements: str
group:
  description: The fields of the group's C(getent group) entry after its name (password, gid, members), or null.
  returned: success
  type: list
  elements: str
login_defs:
  description: The text of C(/etc/login.defs), empty when it is missing.
  returned: success
  type: str
paths:
  description: Per path of O(paths), whether it C(exists), whether it C(isdir), its C(owner) and C(group) names,
    its C(mode) (octal) and whether O(user) or O(group) may enter it through its owner, group or others'
    execute bit (C(service_may_enter)); for a regular file its C(checksum) (SHA-1, as C(ansible.builtin.stat)
    gives it), for a symbolic link its C(target).
  returned: success
  type: dict
releases:
  description: The directories in O(releases_dir).
  returned: success
  type: list
  elements: str
release_markers:
  description: The C(.release.json) file of each complete release, as C(path) and C(mtime), and the C(app_path)
    and C(app_tree_sha256) it records (empty when it has none).
  returned: success
  type: list
  elements: dict
stale_builds:
  description: The build directories (C(.build-*)) in O(install_dir).
  returned: success
  type: list
  elements: str
old_installers:
  description: The directories beside O(installer_dir), of installers no longer used (old versions).
  returned: success
  type: list
  elements: str
old_requirements:
  description: Copies of a requirements file (C(app-requirements.txt)) that earlier versions of the collection left in
    releases, world-readable.
  returned: success
  type: list
  elements: str
processes:
  description: The command line of every process, as C(ps -eo args) shows it.
  returned: success
  type: list
  elements: str
listed_files:
  description: Per directory of O(listed_dirs), the names of the regular files in it, sorted (none when it is
    missing).
  returned: success
  type: dict
credentials:
  description: The names of the files in O(credentials_dir).
  returned: success
  type: list
  elements: str
packages_missing:
  description: The names among O(packages) that dpkg does not have installed.
  returned: success
  type: list
  elements: str
app_directory:
  description: For O(app_path), the status of the directory it leads to as in RV(paths), the components of the
    path that are symbolic links (C(links)), and when it is a directory the number of its files (C(files)) and a
    digest of its tree (C(tree_sha256)) from each entry's relative path and mode, a file's size and modification
    time and a link's target, without C(__pycache__) and C(.git) directories; a write into the tree changes the
    digest. C(changed_since) lists the releases whose marker records O(app_path) with another digest, whose code
    changed in place since they were built from it. Null without O(app_path).
  returned: success
  type: dict
"""

import grp
import hashlib
import json
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule

PYTHON_PROBE = (
    "import json, platform, sys; "
    "print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], 'machine': platform.machine()}))"
)
DPKG_STATUS = "/var/lib/dpkg/status"
RELEASE_MARKER = ".release.json"
# Not part of the code an app directory holds: Python's bytecode cache and a git checkout's repository.
APP_TREE_SKIPPED = frozenset({"__pycache__", ".git"})
OLD_REQUIREMENTS = "app-requirements.txt"


def user_entry(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return [entry.pw_passwd, str(entry.pw_uid), str(entry.pw_gid), entry.pw_gecos, entry.pw_dir, entry.pw_shell]


def group_entry(name):
    try:
        entry = grp.getgrnam(name)
    except KeyError:
        return None
    return [entry.gr_passwd, str(entry.gr_gid), ",".join(entry.gr_mem)]


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def _account_name(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def path_status(path, user, group):
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False, "isdir": False}
    mode = status.st_mode
    found = {
        "exists": True,
        "isdir": stat.S_ISDIR(mode),
        "owner": _account_name(pwd.getpwuid, status.st_uid),
        "group": _account_name(grp.getgrgid, status.st_gid),
        "mode": "%04o" % stat.S_IMODE(mode),
    }
    found["service_may_enter"] = bool(
        (found["owner"] == user and mode & stat.S_IXUSR)
        or (found["group"] == group and mode & stat.S_IXGRP)
        or mode & stat.S_IXOTH
    )
    if stat.S_ISREG(mode):
        found["checksum"] = file_checksum(path)
    elif stat.S_ISLNK(mode):
        found["target"] = os.readlink(path)
    return found


def file_checksum(path):
    digest = hashlib.sha1()  # noqa: S324 - what ansible.builtin.stat and copy compare, not a security digest
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(65536), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_packages():
    """The packages dpkg's status file marks installed."""
    installed, name = set(), None
    for line in read_text(DPKG_STATUS).splitlines():
        if line.startswith("Package: "):
            name = line[len("Package: ") :].strip()
        elif line.startswith("Status: ") and line.split()[-1] == "installed" and name:
            installed.add(name)
    return installed


def entries(directory):
    """The entries of DIRECTORY (not following links), sorted; none when it is missing."""
    try:
        with os.scandir(directory) as found:
            return sorted(found, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def file_names(found):
    return [entry.name for entry in found if entry.is_file(follow_symlinks=False)]


def releases_state(releases_dir, install_dir):
    releases = [entry for entry in entries(releases_dir) if entry.is_dir(follow_symlinks=False)]
    markers, old_requirements = [], []
    for release in releases:
        marker = os.path.join(release.path, RELEASE_MARKER)
        if os.path.isfile(marker):
            markers.append({"path": marker, "mtime": os.stat(marker).st_mtime, **app_of_release(marker)})
        requirements = os.path.join(release.path, OLD_REQUIREMENTS)
        if os.path.isfile(requirements):
            old_requirements.append(requirements)
    stale_builds = [
        entry.path
        for entry in entries(install_dir)
        if entry.name.startswith(".build-") and entry.is_dir(follow_symlinks=False)
    ]
    return {
        "releases": [release.path for release in releases],
        "release_markers": markers,
        "stale_builds": stale_builds,
        "old_requirements": old_requirements,
    }


def old_installers(installer_dir):
    """The directories beside INSTALLER_DIR (none without it)."""
    if not installer_dir:
        return []
    kept = os.path.normpath(installer_dir)
    found = entries(os.path.dirname(kept))
    return [entry.path for entry in found if entry.is_dir(follow_symlinks=False) and entry.path != kept]


def app_of_release(marker):
    """The app directory a release's marker records and its tree's digest then (empty when it has none)."""
    try:
        manifest = json.loads(read_text(marker) or "{}")
    except ValueError:
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}
    return {key: manifest.get(key, "") for key in ("app_path", "app_tree_sha256")}


def linked_components(path):
    """The components of PATH (absolute) that are symbolic links, outermost first."""
    links, current = [], "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if os.path.islink(current):
            links.append(current)
    return links


def app_tree(directory):
    """The number of files below DIRECTORY and a digest of its tree (not following links)."""
    digest, files = hashlib.sha256(), 0
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(name for name in dirs if name not in APP_TREE_SKIPPED)
        for name in sorted(dirs + names):
            path = os.path.join(root, name)
            status = os.lstat(path)
            record = [os.path.relpath(path, directory), status.st_mode]
            if stat.S_ISLNK(status.st_mode):
                record.append(os.readlink(path))
            elif not stat.S_ISDIR(status.st_mode):  # a directory's time changes when Python adds __pycache__ to it
                record += [status.st_size, status.st_mtime_ns]
                files += 1
            digest.update(json.dumps(record).encode() + b"\n")
    return {"files": files, "tree_sha256": digest.hexdigest()}


def app_directory(path, user, group, markers):
    """What the role checks of an app directory that another role put on the host (see RETURN); MARKERS are the
    complete releases' (releases_state)."""
    found = {**path_status(os.path.realpath(path), user, group), "links": linked_components(path)}
    if found["isdir"]:
        found.update(app_tree(path))
    found["changed_since"] = [
        os.path.dirname(marker["path"])
        for marker in markers
        if marker["app_path"] == path and marker["app_tree_sha256"] != found.get("tree_sha256")
    ]
    return found


def processes(proc="/proc"):
    """Every process's command line, its arguments joined by spaces (kernel threads have none)."""
    lines = []
    for entry in entries(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "cmdline"), "rb") as handle:
                arguments = handle.read().rstrip(b"\0").split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        line = b" ".join(arguments).decode("utf-8", "replace")
        if line:
            lines.append(line)
    return lines


def main():
    module = AnsibleModule(
        argument_spec={
            "python": {"type": "path", "required": True},
            "python_variable": {"type": "str", "default": "python"},
            "user": {"type": "str", "required": True},
            "group": {"type": "str", "required": True},
            "paths": {"type": "list", "elements": "path", "default": []},
            "listed_dirs": {"type": "list", "elements": "path", "default": []},
            "releases_dir": {"type": "path", "required": True},
            "install_dir": {"type": "path", "required": True},
            "installer_dir": {"type": "str", "default": ""},
            "credentials_dir": {"type": "path", "required": True},
            "packages": {"type": "list", "elements": "str", "default": []},
            "app_path": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        rc, out, err = module.run_command([params["python"], "-c", PYTHON_PROBE], handle_exceptions=False)
    except OSError as error:
        rc, out, err = None, "", str(error)
    if rc != 0:
        message = "%s: %s cannot run on this host (rc %s): %s"
        module.fail_json(msg=message % (params["python_variable"], params["python"], rc, err.strip()))
    credentials = entries(params["credentials_dir"])
    releases = releases_state(params["releases_dir"], params["install_dir"])
    module.exit_json(
        changed=False,
        python=json.loads(out),
        user=user_entry(params["user"]),
        group=group_entry(params["group"]),
        login_defs=read_text("/etc/login.defs"),
        paths={path: path_status(path, params["user"], params["group"]) for path in params["paths"]},
        listed_files={directory: file_names(entries(directory)) for directory in params["listed_dirs"]},
        credentials=file_names(credentials),
        packages_missing=sorted(set(params["packages"]) - installed_packages()) if params["packages"] else [],
        processes=processes(),
        old_installers=old_installers(params["installer_dir"]),
        app_directory=app_directory(params["app_path"], params["user"], params["group"], releases["release_markers"])
        if params["app_path"]
        else None,
        **releases,
    )


if __name__ == "__main__":
    main()
