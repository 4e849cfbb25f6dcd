# Copyright: reliable.celery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's half of copy_wheelhouse: read the wheelhouse, and send it as one archive when the host's differs."""

from __future__ import annotations

import os
import tarfile
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.reliable.celery.plugins.module_utils._wheelhouse import file_sha256

MODULE = "reliable.celery.copy_wheelhouse"


def wheelhouse_files(src):
    """The regular files directly in SRC (symbolic links followed), by name, with each one's SHA-256."""
    if not os.path.isdir(src):
        raise AnsibleActionFail("copy_wheelhouse: src %s is no directory on the controller" % src)
    entries = sorted(os.scandir(src), key=lambda entry: entry.name)
    return {entry.name: file_sha256(entry.path) for entry in entries if entry.is_file() and entry.name[0] != "."}


def write_archive(src, names, archive):
    """An uncompressed tar of NAMES from SRC (wheels are compressed already), in name order."""
    with tarfile.open(archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            tar.add(os.path.join(src, name), arcname=name, recursive=False)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False  # the temporary directory is made only when the archive is sent
    _VALID_ARGS = frozenset(("src", "dest", "owner", "group", "mode", "directory_mode"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        src = self._task.args.get("src")
        if not src:
            raise AnsibleActionFail("copy_wheelhouse: src (the wheelhouse on the controller) is required")
        args = dict(self._task.args, wheels=wheelhouse_files(os.path.expanduser(src)))
        answer = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        if answer.get("failed") or not answer.get("archive_needed") or self._task.check_mode:
            result.update(answer)
            result["changed"] = bool(answer.get("changed") or answer.get("archive_needed"))
            return result
        with tempfile.TemporaryDirectory(prefix="reliable-celery-wheelhouse-") as local:
            archive = os.path.join(local, "wheelhouse.tar")
            write_archive(os.path.expanduser(src), answer["copied"], archive)
            try:
                remote = self._connection._shell.join_path(self._make_tmp_path(), "wheelhouse.tar")
                self._transfer_file(archive, remote)
                self._fixup_perms2((self._connection._shell.tmpdir, remote))
                answer = self._execute_module(
                    module_name=MODULE, module_args=dict(args, archive=remote), task_vars=task_vars
                )
            finally:
                self._remove_tmp_path(self._connection._shell.tmpdir)
        result.update(answer)
        return result
