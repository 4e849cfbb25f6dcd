# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rabbitmq_definitions and rabbitmq_definitions_drift filters: what the broker role has
RabbitMQ import, and what of it a node's live definitions lack."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.rabbitmq_password_hash import ALGORITHM
from ansible_collections.reliable.celery.plugins.module_utils._versions import major_minor

# RabbitMQ 4 drops a message from a quorum queue, without a trace, once it has been returned 20
# times (its default delivery-limit); a return counts whenever a worker's channel closes with the
# message unacknowledged, including every restart while an ETA task waits. Celery declares classic
# queues by default, but a user's quorum queue must not lose tasks that way: no limit (-1).
# RabbitMQ 3.x has no default limit and refuses both -1 and apply-to quorum_queues.
DELIVERY_LIMIT_POLICY = {
    "name": "celery-delivery-limit",
    "pattern": ".*",
    "apply-to": "quorum_queues",
    "definition": {"delivery-limit": -1},
    "priority": 0,
}


def rabbitmq_definitions(user, password_hash, vhost, broker_version):
    """The user (no tags), its vhost, full permissions on it and, from RabbitMQ 4.0 on, the policy
    that lifts the quorum queues' delivery limit: the content of a definitions file."""
    for name, value in (("user", user), ("password_hash", password_hash), ("vhost", vhost)):
        if not isinstance(value, str) or not value:
            raise AnsibleFilterError(f"rabbitmq_definitions: {name} must be a non-empty string")
    try:
        limits_quorum_deliveries = major_minor(broker_version) >= (4, 0)
    except ValueError:
        message = f"rabbitmq_definitions: broker_version must be MAJOR.MINOR, got {broker_version!r}"
        raise AnsibleFilterError(message) from None
    policies = [{"vhost": vhost, **DELIVERY_LIMIT_POLICY}] if limits_quorum_deliveries else []
    return {
        "users": [{"name": user, "password_hash": password_hash, "hashing_algorithm": ALGORITHM, "tags": []}],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}],
        "policies": policies,
    }


def rabbitmq_definitions_drift(live, wanted):
    """What of WANTED (rabbitmq_definitions) the node's LIVE definitions (rabbitmqctl
    export_definitions) lack or hold otherwise, as 'user NAME', 'vhost NAME', 'permissions
    USER@VHOST' and 'policy NAME'; empty when the node is in sync. Other users, vhosts and
    policies on the node are not the role's and do not count."""
    if not isinstance(live, dict) or not isinstance(wanted, dict):
        raise AnsibleFilterError("rabbitmq_definitions_drift: both definitions must be mappings")
    drift = [f"user {user['name']}" for user in wanted["users"] if user not in _users(live)]
    drift += [f"vhost {vhost['name']}" for vhost in wanted["vhosts"] if vhost["name"] not in _vhost_names(live)]
    drift += [
        f"permissions {permission['user']}@{permission['vhost']}"
        for permission in wanted["permissions"]
        if permission not in live.get("permissions", [])
    ]
    drift += [f"policy {policy['name']}" for policy in wanted["policies"] if policy not in live.get("policies", [])]
    return drift


def _users(live):
    """The live users with the fields the role sets (an export also has limits and more)."""
    fields = ("name", "password_hash", "hashing_algorithm", "tags")
    return [{field: user.get(field) for field in fields} for user in live.get("users", [])]


def _vhost_names(live):
    return [vhost.get("name") for vhost in live.get("vhosts", [])]


class FilterModule:
    def filters(self):
        return {"rabbitmq_definitions": rabbitmq_definitions, "rabbitmq_definitions_drift": rabbitmq_definitions_drift}
