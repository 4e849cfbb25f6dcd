# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service_input_problems filter: what in a Celery service's description the roles refuse
before they change anything, each problem a message naming the variable to change."""

from __future__ import annotations

import functools
import glob
import os

from ansible_collections.reliable.celery.plugins.plugin_utils.problems import problems
from ansible_collections.reliable.celery.plugins.test.account_name import account_name
from ansible_collections.reliable.celery.plugins.test.service_directory import service_directory


def _install_input_problem(service):
    prefix = service["variable_prefix"]
    wrong = (
        (service["requirements_file"] and not os.path.isfile(service["requirements_file"]))
        or (service["wheelhouse"] and not os.path.isdir(service["wheelhouse"]))
        or int(service["releases_to_keep"]) < 1
        or not os.path.isabs(service["python"])
        or not account_name(service["user"])
        or not account_name(service["group"])
    )
    if not wrong:
        return None
    return (
        f"{prefix}: the requirements file must be a file and the wheelhouse a directory on the controller;"
        f" {prefix}_releases_to_keep must be >= 1; the python variable an absolute path; the user and group"
        " variables system account names (lower-case letters, digits, '_' and '-', at most 32, not starting with a"
        " digit or '-')."
    )


def _uv_wheel_problem(service, uv_version):
    """uv is installed from the wheelhouse when there is one (plugins/filter/release.py)."""
    prefix = service["variable_prefix"]
    wheelhouse = service["wheelhouse"]
    if service["installer"] != "uv" or not wheelhouse:
        return None
    if glob.glob(os.path.join(glob.escape(wheelhouse), f"uv-{uv_version}-*.whl")):
        return None
    return (
        f"{prefix}_installer uv is installed from the wheelhouse {wheelhouse}, which has no wheel of uv {uv_version}:"
        f" add uv=={uv_version} to it (wheelhouse_requirements of the playbook reliable.celery.wheelhouse) or set"
        f" {prefix}_installer to pip."
    )


def _directory_problems(service):
    """The role writes into these directories and hands the home to the service user."""
    prefix = service["variable_prefix"]
    paths = {
        "install_dir": [service["install_dir"]],
        "home": [service["home"]],
        "config_dir": [service["config_dir"]],
        "read_write_paths": list(dict.fromkeys(path for unit in service["units"] for path in unit["read_write_paths"])),
        "app_path": [service["app_path"]] if service["app_path"] else [],
    }
    for variable, values in paths.items():
        refused = [value for value in values if not service_directory(value)]
        if refused:
            yield (
                f"{prefix}_{variable} must be an absolute, normalised path at least two levels deep (such as"
                " /opt/celery or /var/lib/celery), not a directory the system shares (/var/lib, /var/log, /usr/local,"
                " /etc/systemd, ...) and not inside /proc, /sys, /dev, /boot, /tmp, /var/tmp, /home, /root or"
                f" /run/user, which the units hide or which keep no files; refused: {', '.join(map(str, refused))}."
            )


def service_input_problems(service, uv_version):
    """The problems of SERVICE (celery_base's celery_base_service) that need no host to find: install inputs the
    controller lacks, a wheelhouse without the uv of UV_VERSION that would install from it, a path variable that is
    a system directory. An empty list: none."""
    checks = (_install_input_problem, functools.partial(_uv_wheel_problem, uv_version=uv_version), _directory_problems)
    return problems("service_input_problems", "a service description", service, checks)


class FilterModule:
    def filters(self):
        return {"service_input_problems": service_input_problems}
