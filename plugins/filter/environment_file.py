# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The environment_file filter: a mapping as the lines of a systemd EnvironmentFile."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def environment_file(variables):
    """``NAME="value"`` lines, sorted by name: double quotes, backslash and quote escaped.

    systemd reads such a value back unchanged; ``$`` is not expanded in EnvironmentFile=.
    """
    if not isinstance(variables, dict):
        raise AnsibleFilterError("environment_file expects a mapping of variable names to values")
    lines = []
    for name in sorted(variables):
        value = str(variables[name])
        if not _NAME.match(str(name)):
            raise AnsibleFilterError(f"environment_file: {name!r} is not an environment variable name")
        if "\n" in value or "\r" in value:
            # The value may be a secret: name the variable only.
            raise AnsibleFilterError(f"environment_file: the value of {name} spans lines")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{name}="{escaped}"\n')
    return "".join(lines)


class FilterModule:
    def filters(self):
        return {"environment_file": environment_file}
