# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The app_credentials filter: an app's secrets, checked before they become systemd credentials."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# A file name in the credentials directories, and a name systemd accepts in LoadCredential=.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def app_credentials(credentials, variable, reserved=()):
    """CREDENTIALS (a name -> secret mapping) checked: each name 1-64 letters, digits, '_', '.' or '-' (not
    starting with '.' or '-'), none of RESERVED (the role's own credentials), each value a non-empty string.

    The error names VARIABLE and the refused names, never a value.
    """
    if not isinstance(credentials, dict):
        raise AnsibleFilterError(f"{variable} must be a mapping of credential names to secrets")
    refused = sorted(str(name) for name in credentials if not _NAME.match(str(name)) or name in reserved)
    empty = sorted(str(name) for name, value in credentials.items() if not isinstance(value, str) or not value)
    if refused or empty:
        raise AnsibleFilterError(
            f"{variable}: names must be 1-64 letters, digits, '_', '.' or '-', not starting with '.' or '-', and "
            f"not {', '.join(sorted(reserved))} (the role's own); values non-empty strings; refused names: "
            f"{', '.join(refused) or 'none'}; empty or not a string: {', '.join(empty) or 'none'}"
        )
    return credentials


class FilterModule:
    def filters(self):
        return {"app_credentials": app_credentials}
