# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The delivery_timeouts filter: every timeout of the stack from the longest task."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def whole_number(value, variable, minimum=0):
    """VALUE as an int (an int, or digits given as a string on the command line), at least MINIMUM."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        number = None
    if number is None or number < minimum:
        raise AnsibleFilterError(f"{variable} must be a whole number >= {minimum}, got {value!r}")
    return number


def delivery_timeouts(max_task_seconds, max_eta_seconds=0, margin_seconds=60, prefix="celery"):
    """The timeouts that must outlast the longest task, from one formula for worker and broker.

    - ``stop_timeout_seconds`` (TimeoutStopSec): the longest task + margin;
    - ``visibility_timeout_seconds`` (Redis): + the longest ETA/countdown, since kombu's Redis
      transport re-delivers a message unacked for longer, running or waiting for its ETA;
    - ``consumer_timeout_ms`` (RabbitMQ): the same span in milliseconds, or RabbitMQ closes the
      channel of a worker still holding an acks_late task.

    PREFIX names the variables in errors (``celery_worker`` -> celery_worker_max_task_seconds).
    """
    task = whole_number(max_task_seconds, f"{prefix}_max_task_seconds", minimum=1)
    eta = whole_number(max_eta_seconds, f"{prefix}_max_eta_seconds")
    margin = whole_number(margin_seconds, f"{prefix}_timeout_margin_seconds")
    return {
        "stop_timeout_seconds": task + margin,
        "visibility_timeout_seconds": task + eta + margin,
        "consumer_timeout_ms": (task + eta + margin) * 1000,
    }


# The roles' defaults (defaults/main.yml of celery_worker and celery_broker).
DEFAULTS = {"max_task_seconds": 600, "max_eta_seconds": 0, "timeout_margin_seconds": 60}


def host_delivery_timeouts(host_vars, role):
    """delivery_timeouts of ROLE (worker, broker) on a host, from its inventory variables.

    Each value as the role resolves it: ``celery_ROLE_NAME``, else the collection-wide
    ``celery_NAME``, else the role's default. For checks across hosts (playbooks/site.yml), where
    roles' defaults are not in hostvars.
    """

    def value(name):
        for key in (f"celery_{role}_{name}", f"celery_{name}"):
            if key in host_vars:
                return host_vars[key]
        return DEFAULTS[name]

    return delivery_timeouts(
        value("max_task_seconds"), value("max_eta_seconds"), value("timeout_margin_seconds"), prefix=f"celery_{role}"
    )


class FilterModule:
    def filters(self):
        return {
            "delivery_timeouts": delivery_timeouts,
            "host_delivery_timeouts": host_delivery_timeouts,
            "whole_number": whole_number,
        }
