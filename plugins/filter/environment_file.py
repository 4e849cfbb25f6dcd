# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The environment_file filter: a mapping as the lines of a systemd EnvironmentFile."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# Set by the roles themselves: a user's value would silently replace the role's.
RESERVED = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_WORKER_ARGS")
RESERVED_PREFIX = "RELIABLE_CELERY_"


def service_environment(variables, variable):
    """VARIABLES (a user's environment for a service) checked: names, not reserved, one-line values.

    The error names VARIABLE and the refused names, never a value (values may be secrets).
    """
    if not isinstance(variables, dict):
        raise AnsibleFilterError(f"{variable} must be a mapping of environment variable names to values")
    refused = sorted(
        str(name)
        for name in variables
        if not _NAME.match(str(name)) or name in RESERVED or str(name).startswith(RESERVED_PREFIX)
    )
    multiline = sorted(str(name) for name, value in variables.items() if re.search(r"[\r\n]", str(value)))
    if refused or multiline:
        raise AnsibleFilterError(
            f"{variable}: keys must be environment variable names ([A-Za-z_][A-Za-z0-9_]*, not "
            f"{', '.join(RESERVED)} or {RESERVED_PREFIX}*: the role sets those) and values one line; "
            f"refused names: {', '.join(refused) or 'none'}; multi-line values: {', '.join(multiline) or 'none'}"
        )
    return variables


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
        return {"environment_file": environment_file, "service_environment": service_environment}
