#!/usr/bin/python
# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: copy_wheelhouse
short_description: Copy a wheelhouse from the controller to a host in one transfer
version_added: 0.1.0
description:
  - Makes O(dest) on the host hold exactly the files of the controller's directory O(src), a wheelhouse (the flat
    directory that C(pip --find-links) and C(uv --find-links) read).
  - The action plugin of the same name reads O(src) and the module compares the host's files by SHA-256. When they
    differ, the plugin sends the differing files as one uncompressed tar archive and the module unpacks it.
    M(ansible.builtin.copy) with a directory takes remote calls per file; a wheelhouse of 22 wheels took 16.6 s
    that way and 1.6 s this way.
  - Files of O(dest) that the wheelhouse does not have are removed; directories in O(dest) are left alone.
author:
  - reliable.celery maintainers (@reliable-celery)
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on
      the controller.
    support: full
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
  src:
    description:
      - The wheelhouse on the controller. Its regular files (symbolic links followed) are copied; subdirectories are
        not. Read by the action plugin.
    type: path
    required: true
  dest:
    description:
      - The directory on the host, created when missing.
    type: path
    required: true
  owner:
    description:
      - Owner of O(dest) and of its files.
    type: str
    default: root
  group:
    description:
      - Group of O(dest) and of its files.
    type: str
    default: root
  mode:
    description:
      - Mode of the files, as for M(ansible.builtin.file).
    type: raw
    default: "0644"
  directory_mode:
    description:
      - Mode of O(dest), as for M(ansible.builtin.file).
    type: raw
    default: "0755"
  wheels:
    description:
      - Each file of O(src) by name, with its SHA-256. Set by the action plugin.
    type: dict
    required: true
  archive:
    description:
      - The tar archive of the wheelhouse that the action plugin sent, on the host. Set by the action plugin.
    type: path
notes:
  - Use it through the action plugin (the task C(reliable.celery.copy_wheelhouse)); it sets O(wheels) and O(archive).
"""

EXAMPLES = r"""
- name: Copy the project's wheelhouse
  reliable.celery.copy_wheelhouse:
    src: "{{ playbook_dir }}/wheelhouse"
    dest: /srv/proj/wheelhouse
"""

RETURN = r"""
archive_needed:
  description: Whether the host's files differ from the wheelhouse's, so that the action plugin sends the archive.
  returned: always
  type: bool
copied:
  description: The files that the host lacked or had with other content, by name, written from the archive (with
    RV(archive_needed), the ones the archive must bring).
  returned: always
  type: list
  elements: str
removed:
  description: The files removed because the wheelhouse does not have them, by name.
  returned: always
  type: list
  elements: str
"""

import os
import shutil
import tarfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.reliable.celery.plugins.module_utils._wheelhouse import file_sha256


def host_files(dest):
    """The regular files and symbolic links directly in DEST, by name, with the path of each."""
    if not os.path.isdir(dest):
        return {}
    return {
        entry.name: entry.path
        for entry in os.scandir(dest)
        if entry.is_symlink() or entry.is_file(follow_symlinks=False)
    }


def differences(dest, wheels):
    """The wheelhouse's files that the host lacks or has with other content, and the host's files it does not have."""
    present = host_files(dest)
    stale = sorted(name for name, path in present.items() if name not in wheels)
    missing = sorted(
        name
        for name, checksum in wheels.items()
        if name not in present or os.path.islink(present[name]) or file_sha256(present[name]) != checksum
    )
    return missing, stale


def unpack(module, archive, dest, names, wheels):
    """Write NAMES from ARCHIVE into DEST, each through a temporary file checked against its SHA-256."""
    with tarfile.open(archive, mode="r:") as tar:
        for member in tar:
            if member.name not in names:
                continue
            if not member.isfile() or "/" in member.name or member.name.startswith("."):
                module.fail_json(msg="the wheelhouse archive holds %r, which is no plain file name" % member.name)
            target = os.path.join(dest, member.name)
            partial = os.path.join(dest, ".%s.partial" % member.name)
            with open(partial, "wb") as handle:
                shutil.copyfileobj(tar.extractfile(member), handle)
            if file_sha256(partial) != wheels[member.name]:
                os.unlink(partial)
                module.fail_json(msg="%s changed on the controller while it was sent; run again" % member.name)
            if os.path.islink(target):
                os.unlink(target)
            os.replace(partial, target)
            names.discard(member.name)
    if names:
        module.fail_json(msg="the wheelhouse archive lacks %s" % ", ".join(sorted(names)))


def set_attributes(module, path, mode, changed):
    wanted = {"path": path, "mode": mode, "owner": module.params["owner"], "group": module.params["group"]}
    return module.set_fs_attributes_if_different(module.load_file_common_arguments(wanted), changed)


def main():
    module = AnsibleModule(
        argument_spec={
            "src": {"type": "path", "required": True},
            "dest": {"type": "path", "required": True},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
            "mode": {"type": "raw", "default": "0644"},
            "directory_mode": {"type": "raw", "default": "0755"},
            "wheels": {"type": "dict", "required": True},
            "archive": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    dest, wheels = params["dest"], params["wheels"]
    missing, stale = differences(dest, wheels)
    if missing and params["archive"] is None:
        module.exit_json(changed=False, archive_needed=True, copied=missing, removed=stale)
    changed = bool(missing or stale) or not os.path.isdir(dest)
    if not module.check_mode:
        if not os.path.isdir(dest):
            os.makedirs(dest)
        if missing:
            unpack(module, params["archive"], dest, set(missing), wheels)
        for name in stale:
            os.unlink(os.path.join(dest, name))
    if os.path.isdir(dest):
        changed = set_attributes(module, dest, params["directory_mode"], changed)
        for name in wheels:
            if os.path.exists(os.path.join(dest, name)):
                changed = set_attributes(module, os.path.join(dest, name), params["mode"], changed)
    module.exit_json(changed=changed, archive_needed=bool(missing), copied=missing, removed=stale)


if __name__ == "__main__":
    main()
