# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The delivery_timeouts filter: every timeout of the stack from the longest task."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def whole_number(value, variable, minimum=0, zero_turns_off=False):
    """VALUE as an int (an int, or digits given as a string on the command line), at least MINIMUM,
    or 0 when ZERO_TURNS_OFF (the variable's feature)."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        number = None
    if number is not None and (number >= minimum or (zero_turns_off and number == 0)):
        return number
    allowed = f"0 (off) or a whole number >= {minimum}" if zero_turns_off else f"a whole number >= {minimum}"
    raise AnsibleFilterError(f"{variable} must be {allowed}, got {value!r}")


def delivery_timeouts(max_task_seconds, max_eta_seconds=0, margin_seconds=60, prefix="celery"):
    """The timeouts that must outlast the longest task, from one formula for worker and broker.

    - ``visibility_timeout_seconds`` (Redis): the longest task + the longest ETA/countdown + margin,
      since kombu's Redis transport re-delivers a message unacked for longer, running or waiting for
      its ETA;
    - ``consumer_timeout_ms`` (RabbitMQ): the same span in milliseconds, or RabbitMQ closes the
      channel of a worker still holding an acks_late task.

    PREFIX names the variables in errors (``celery_worker`` -> celery_worker_max_task_seconds).
    """
    task = whole_number(max_task_seconds, f"{prefix}_max_task_seconds", minimum=1)
    eta = whole_number(max_eta_seconds, f"{prefix}_max_eta_seconds")
    margin = whole_number(margin_seconds, f"{prefix}_timeout_margin_seconds")
    return {
        "visibility_timeout_seconds": task + eta + margin,
        "consumer_timeout_ms": (task + eta + margin) * 1000,
    }


# The shortest lease: a worker renews every quarter of it (reliable_celery_leases).
MIN_LEASE_SECONDS = 10


def redis_visibility_timeout(timeouts, leases, lease_seconds, prefix="celery_worker"):
    """The Redis broker's visibility timeout, and the least celery_worker_settings may set it to.

    With LEASES, the lease (LEASE_SECONDS, at least MIN_LEASE_SECONDS): the worker renews what it
    holds. Without, the span of TIMEOUTS (delivery_timeouts): a shorter one re-delivers a task that
    is still running. LEASE_SECONDS is checked either way, naming ``PREFIX_redis_lease_seconds``.
    """
    lease = whole_number(lease_seconds, f"{prefix}_redis_lease_seconds", minimum=MIN_LEASE_SECONDS)
    if leases:
        return {"visibility_timeout_seconds": lease, "minimum_seconds": MIN_LEASE_SECONDS}
    span = timeouts["visibility_timeout_seconds"]
    return {"visibility_timeout_seconds": span, "minimum_seconds": span}


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
            "redis_visibility_timeout": redis_visibility_timeout,
            "whole_number": whole_number,
        }
