# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The path_matches filter: whether a path on the host is already what a task would make it."""

from __future__ import annotations

import hashlib

from ansible.errors import AnsibleFilterError


def path_matches(status, owner, group, mode, content=None):
    """Whether the path STATUS describes (a value of celery_service_info's ``paths``) is a regular
    file holding CONTENT, or a directory when CONTENT is None, with OWNER, GROUP and MODE (octal,
    such as ``0640``): a copy, template or file task would change nothing there.

    A missing path, another kind of file, or a status without the checksum never matches.
    """
    try:
        wanted_mode = "%04o" % int(str(mode), 8)
    except ValueError as error:
        raise AnsibleFilterError(f"path_matches: mode must be octal, such as 0640, got {mode!r}") from error
    if not status or not status.get("exists"):
        return False
    if (status.get("owner"), status.get("group"), status.get("mode")) != (owner, group, wanted_mode):
        return False
    if content is None:
        return bool(status.get("isdir"))
    if not isinstance(content, str):
        raise AnsibleFilterError(f"path_matches: content must be a string, got {type(content).__name__}")
    # SHA-1, as ansible.builtin.copy compares it: not a security digest.
    return status.get("checksum") == hashlib.sha1(content.encode("utf-8")).hexdigest()  # noqa: S324


class FilterModule:
    def filters(self):
        return {"path_matches": path_matches}
