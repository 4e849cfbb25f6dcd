# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rabbitmq_cluster filter: the cluster a RabbitMQ node forms, checked before anything changes."""

from __future__ import annotations

import copy
import re

from ansible.errors import AnsibleFilterError

# RabbitMQ's node names are rabbit@SHORT_HOSTNAME: a host name's first label.
HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# The Erlang cookie: RabbitMQ's nodes and CLI tools authenticate to each other with it.
COOKIE = re.compile(r"^[A-Za-z0-9]{20,255}$")


def rabbitmq_cluster(nodes, cookie, this_host):
    """NODES (celery_broker_rabbitmq_cluster_nodes, short host names) checked with COOKIE
    (celery_broker_rabbitmq_erlang_cookie) for the node THIS_HOST (its short host name):
    ``{clustered, nodes: ["rabbit@HOST", ...]}``. No nodes, or this host alone: a single node,
    which needs no cookie of its own."""
    if not isinstance(nodes, list) or not all(isinstance(node, str) for node in nodes):
        raise AnsibleFilterError("celery_broker_rabbitmq_cluster_nodes must be a list of host names")
    refused = [node for node in nodes if not HOST_LABEL.match(node)]
    if refused:
        raise AnsibleFilterError(
            "celery_broker_rabbitmq_cluster_nodes must hold the nodes' short host names (RabbitMQ names a node "
            f"rabbit@SHORT_HOSTNAME: letters, digits and hyphens, no dots); refused: {refused}"
        )
    if len(set(nodes)) != len(nodes):
        raise AnsibleFilterError(f"celery_broker_rabbitmq_cluster_nodes must not repeat a host: {nodes}")
    if len(nodes) <= 1:
        return {"clustered": False, "nodes": [f"rabbit@{node}" for node in nodes]}
    if this_host not in nodes:
        raise AnsibleFilterError(
            f"celery_broker_rabbitmq_cluster_nodes is {nodes}, without this host's short host name {this_host!r}: "
            "list the names the nodes have (hostname -s), as RabbitMQ names them"
        )
    if len(nodes) % 2 == 0:
        raise AnsibleFilterError(
            f"celery_broker_rabbitmq_cluster_nodes has {len(nodes)} nodes: a cluster needs an odd number (3, 5, 7), "
            "or losing half of it stops every quorum queue"
        )
    if not isinstance(cookie, str) or not COOKIE.match(cookie):
        raise AnsibleFilterError(
            "celery_broker_rabbitmq_erlang_cookie must be 20-255 letters and digits, the same on every node of "
            "celery_broker_rabbitmq_cluster_nodes (keep it in ansible-vault)"
        )
    return {"clustered": True, "nodes": [f"rabbit@{node}" for node in nodes]}


def broker_hosts_as_cluster_nodes(broker_types, group):
    """BROKER_TYPES (each host of the broker GROUP, in inventory order: its celery_broker_type) as the short host
    names of the RabbitMQ cluster they form, or [] for one host or several Redis or Valkey hosts (a replication
    group with Sentinel: plugins/filter/redis_sentinel.py). Several hosts must all run the same broker."""
    types = sorted(set(broker_types.values()))
    if len(broker_types) > 1 and len(types) > 1:
        raise AnsibleFilterError(
            f"{group} has {len(broker_types)} hosts with celery_broker_type {', '.join(types)}: one host serves any "
            "broker type (redis, valkey, rabbitmq); several hosts form one broker of one type, every host with the "
            "same celery_broker_type: a RabbitMQ cluster (rabbitmq), or Redis or Valkey with Sentinel (redis or "
            "valkey) (celery_site_broker_group names the group)"
        )
    return [host.split(".", 1)[0] for host in broker_types] if len(broker_types) > 1 and types == ["rabbitmq"] else []


# What every client of a cluster needs: queues replicated on every node (quorum), so that losing one node loses no
# message and no queue; topic exchanges, which Celery's delayed delivery needs with quorum queues; publisher
# confirms, so that a publish counts only once the cluster holds the message.
CLUSTER_CLIENT_SETTINGS = {
    "task_default_queue_type": "quorum",
    "task_default_exchange_type": "topic",
    "broker_transport_options": {"confirm_publish": True},
}


def rabbitmq_cluster_client_settings(broker):
    """The Celery settings a client of BROKER (the celery_url filter's parts) needs: CLUSTER_CLIENT_SETTINGS when
    its URL lists several RabbitMQ nodes, else none."""
    if broker.get("is_redis") or len(broker.get("hosts", [])) < 2:
        return {}
    return copy.deepcopy(CLUSTER_CLIENT_SETTINGS)


class FilterModule:
    def filters(self):
        return {
            "rabbitmq_cluster": rabbitmq_cluster,
            "rabbitmq_cluster_client_settings": rabbitmq_cluster_client_settings,
            "broker_hosts_as_cluster_nodes": broker_hosts_as_cluster_nodes,
        }
