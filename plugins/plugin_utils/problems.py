# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the *_problems filters share: each check of a role's variables or host gives the messages of
its problems, and a value that is not what the checks read is an error naming the filter, never a
value (the variables may hold secrets)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def problems(name, what, found, checks):
    """The messages of CHECKS (functions of FOUND giving None, a message or messages), in order. FOUND not being
    WHAT (a key missing, a value of another type) raises an error naming the filter NAME."""
    messages = []
    try:
        for check in checks:
            result = check(found)
            if isinstance(result, str):
                messages.append(result)
            elif result is not None:
                messages.extend(result)
    except KeyError as error:
        raise AnsibleFilterError(f"{name}: not {what}: missing {error}") from error
    except (TypeError, AttributeError, ValueError) as error:
        # Not chained: Ansible shows the cause's message, which may hold the value (int('secret')).
        raise AnsibleFilterError(f"{name}: not {what}: a value of the wrong type ({type(error).__name__})") from None
    return messages


def app_source_problem(prefix, found):
    """A worker's or beat's app must come from somewhere: packages, a requirements file or a directory of code."""
    if found["app_packages"] or found["app_requirements_file"] or found["app_path"]:
        return None
    return (
        f"{prefix}_app_packages, {prefix}_app_requirements_file or {prefix}_app_path must name the app to install or"
        " the directory of its code."
    )
