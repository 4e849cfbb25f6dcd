# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The flower_input_problems filter: what in celery_flower's variables the role refuses before it
changes anything, beyond the argument spec and the filters that raise their own errors; each
problem a message naming the variable to change, never a password."""

from __future__ import annotations

import json
import re

from ansible_collections.reliable.celery.plugins.plugin_utils.problems import problems
from ansible_collections.reliable.celery.plugins.test.exact_version import exact_version

URL_PREFIX = re.compile(r"([A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*)?")
USERNAME = re.compile(r"[^:,\s]+")
# Flower splits FLOWER_BASIC_AUTH on commas; a password is one line.
PASSWORD_REFUSED_CHARACTERS = re.compile(r"[,\x00-\x1f\x7f]")
PASSWORD_MINIMUM = 12
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _version_problem(found):
    if exact_version(found["version"]):
        return None
    return f"celery_flower_version must be an exact version such as 2.2.0 (got '{found['version']}')."


def _listen_problem(found):
    if 1024 <= found["port"] <= 65535 and URL_PREFIX.fullmatch(found["url_prefix"].strip("/")):
        return None
    return (
        f"celery_flower_port must be 1024-65535 (got {found['port']}; the unit has no capability to bind a lower port);"
        " celery_flower_url_prefix empty or path segments of letters, digits, '_' and '-' separated by '/', such as"
        f" flower or tools/flower (got '{found['url_prefix']}')."
    )


def _exposure_problem(found):
    if found["is_loopback"] or found["basic_auth"]:
        return None
    return (
        f"celery_flower_address is '{found['address']}', not a loopback address, and celery_flower_basic_auth is empty:"
        f" anyone who can reach port {found['port']} could revoke tasks, shut workers down and read task arguments."
        " Set celery_flower_basic_auth, or keep celery_flower_address on 127.0.0.1 or ::1 (and put an authenticating"
        " proxy in front)."
    )


def _users_problem(found):
    """Only user names reach the message, never a password."""
    names = [user["username"] for user in found["basic_auth"]]
    bad = [name for name in names if not USERNAME.fullmatch(str(name))]
    duplicates = sorted({name for name in names if names.count(name) > 1}, key=str)
    weak = list(
        dict.fromkeys(
            user["username"]
            for user in found["basic_auth"]
            if len(str(user["password"])) < PASSWORD_MINIMUM
            or PASSWORD_REFUSED_CHARACTERS.search(str(user["password"]))
        )
    )
    if not (bad or duplicates or weak):
        return None
    return (
        "celery_flower_basic_auth: each username must be unique, non-empty and without ':', ',' or whitespace"
        f" (refused: {', '.join(map(json.dumps, bad + duplicates)) or 'none'}); each password at least"
        f" {PASSWORD_MINIMUM} characters, one line, without ',' (Flower splits FLOWER_BASIC_AUTH on commas)"
        f" (refused for: {', '.join(map(json.dumps, weak)) or 'none'})."
    )


def _options_problem(found):
    allowed = found["allowed_options"]
    refused = [name for name in found["options"] if name not in allowed]
    multiline = [value for value in found["options"].values() if CONTROL_CHARACTERS.search(str(value))]
    if not (refused or multiline):
        return None
    return (
        f"celery_flower_options may set only {', '.join(allowed)} (Flower option names, lower case), with one-line"
        f" values; refused: {', '.join(refused) or 'none'}. The role sets address, port, basic_auth, url_prefix,"
        " persistent and db from its own variables."
    )


def flower_input_problems(found):
    """The problems of Flower's variables, FOUND as the role gathers them (tasks/preflight.yml): the version, the
    port and URL prefix, a Flower reachable from other hosts without authentication, the basic auth users and the
    other options. An empty list: none."""
    checks = (_version_problem, _listen_problem, _exposure_problem, _users_problem, _options_problem)
    return problems("flower_input_problems", "Flower's variables", found, checks)


class FilterModule:
    def filters(self):
        return {"flower_input_problems": flower_input_problems}
