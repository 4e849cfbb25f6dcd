# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service_account filter: whether a service may run as an account, as the host has it."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# Shells that never give a login; the user module's default for a missing one is a login shell.
NO_LOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")
# login.defs(5)'s defaults when the file does not set them.
_LOGIN_DEFS_DEFAULTS = {"UID_MIN": 1000, "GID_MIN": 1000}
_SETTING = re.compile(r"^\s*(UID_MIN|GID_MIN)\s+(\d+)\s*(?:#.*)?$", re.MULTILINE)


def login_defs_minimums(text):
    """UID_MIN and GID_MIN from the text of /etc/login.defs (the last setting wins, as in login.defs)."""
    found = dict(_LOGIN_DEFS_DEFAULTS)
    for name, value in _SETTING.findall(text or ""):
        found[name] = int(value)
    return found


def service_account(entry, login_defs, variable, kind="user", name=""):
    """``missing`` if the account does not exist (the role creates it as a system account), or
    ``system`` if it is an existing system account the role may use as it is.

    ENTRY is the getent fields of NAME in ``passwd`` (kind ``user``: password, uid, gid, gecos,
    home, shell) or ``group`` (kind ``group``: password, gid, members), or None when missing.
    LOGIN_DEFS is the text of /etc/login.defs. Root, an account in the range login.defs gives
    people (UID_MIN, GID_MIN and above) and a user with a login shell are refused, naming VARIABLE:
    the role would otherwise run a service as a person's account or as root.
    """
    if kind not in ("user", "group"):
        raise AnsibleFilterError(f"service_account: kind must be user or group, got {kind!r}")
    if entry is None:
        return "missing"
    fields = list(entry)
    try:
        number = int(fields[1])
    except (IndexError, TypeError, ValueError) as error:
        raise AnsibleFilterError(f"service_account: not a getent {kind} entry: {entry!r}") from error
    label = f"{variable} is {kind} {name!r}" if name else f"{variable} is a {kind}"
    wanted = f"Set {variable} to a system {kind} of its own (it is created if missing), such as celery."

    if number == 0:
        raise AnsibleFilterError(f"{label} with id 0 (root): a Celery service never runs as root. {wanted}")
    minimum_name = "UID_MIN" if kind == "user" else "GID_MIN"
    minimum = login_defs_minimums(login_defs)[minimum_name]
    if number >= minimum:
        raise AnsibleFilterError(
            f"{label}, an existing account that is not a system account (id {number} >= {minimum_name} {minimum}"
            f" in /etc/login.defs): the role would run a service as a person's account. {wanted}"
        )
    if kind == "user":
        shell = fields[5] if len(fields) > 5 else ""
        if shell not in NO_LOGIN_SHELLS:
            raise AnsibleFilterError(
                f"{label}, an existing system account with the login shell {shell or '/bin/sh (empty)'!r}; a service"
                f" account has none of {', '.join(NO_LOGIN_SHELLS)}. The role never changes an existing account."
                f" {wanted}"
            )
    return "system"


class FilterModule:
    def filters(self):
        return {"service_account": service_account}
