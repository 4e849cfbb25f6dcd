# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The account_name test: a system user or group name useradd and groupadd take on Debian."""

from __future__ import annotations

import re

# Debian's NAME_REGEX for system accounts, at most 32 characters.
_ACCOUNT = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def account_name(value):
    """Whether VALUE is a user or group name: lower-case letters, digits, ``_`` and ``-``, at most
    32, not starting with a digit or ``-``."""
    return isinstance(value, str) and bool(_ACCOUNT.match(value))


class TestModule:
    def tests(self):
        return {"account_name": account_name}
