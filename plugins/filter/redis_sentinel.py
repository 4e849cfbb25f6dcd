# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The redis_sentinel filter: the Redis or Valkey replication group with Sentinel a broker host joins, checked
before anything changes; sentinel_group_whole: whether a sentinel says that group is whole."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.redis_acl import check_password

NODES = "celery_broker_redis_sentinel_nodes"


def redis_sentinel(nodes, bind_addresses, password, master_name):
    """NODES (celery_broker_redis_sentinel_nodes: every broker host's address, the first the primary of a new group)
    for the host listening on BIND_ADDRESSES (celery_broker_bind_addresses; the one of them NODES lists is this
    host's), with PASSWORD (celery_broker_redis_sentinel_password) and MASTER_NAME
    (celery_broker_redis_sentinel_master): ``{enabled, nodes, address, first_primary, quorum}``. No nodes, or
    one: a single Redis, without Sentinel."""
    if not isinstance(nodes, list) or not all(isinstance(node, str) and node for node in nodes):
        raise AnsibleFilterError(f"{NODES} must be a list of the broker hosts' addresses")
    if len(nodes) <= 1:
        return {"enabled": False}
    if len(set(nodes)) != len(nodes):
        raise AnsibleFilterError(f"{NODES} must not repeat an address: {nodes}")
    if len(nodes) % 2 == 0:
        raise AnsibleFilterError(
            f"{NODES} has {len(nodes)} addresses: Sentinel needs an odd number of hosts (3, 5, 7), a majority of "
            "which must agree before a replica is promoted"
        )
    addresses = [str(address).lstrip("-") for address in bind_addresses or []]
    mine = [address for address in addresses if address in nodes]
    if not mine:
        raise AnsibleFilterError(
            f"{NODES} is {nodes}, and celery_broker_bind_addresses ({addresses}) lists none of them: this host "
            "must listen on its address in the group, which its replicas and sentinels reach it by"
        )
    check_password(password, "celery_broker_redis_sentinel_password")
    if not isinstance(master_name, str) or not master_name.replace("-", "").replace("_", "").isalnum():
        raise AnsibleFilterError(
            "celery_broker_redis_sentinel_master must be letters, digits, '-' or '_': the name clients ask the "
            f"sentinels for, got {master_name!r}"
        )
    return {
        "enabled": True,
        "nodes": nodes,
        "address": mine[0],
        "first_primary": nodes[0],
        "quorum": len(nodes) // 2 + 1,
    }


def broker_hosts_as_sentinel_nodes(broker_types, broker_addresses):
    """BROKER_TYPES (each host of the broker group, in inventory order: its celery_broker_type; checked by
    broker_hosts_as_cluster_nodes) as the addresses (BROKER_ADDRESSES, by host) of one Redis or Valkey group with
    Sentinel when there are several Redis or Valkey hosts, else []."""
    several_redis = len(broker_types) > 1 and set(broker_types.values()) <= {"redis", "valkey"}
    return [broker_addresses[host] for host in broker_types] if several_redis else []


def sentinel_group_whole(answer_lines, node_count):
    """Whether a sentinel's ANSWER_LINES (to AUTH, SENTINEL CKQUORUM and SENTINEL MASTER, one line each then names
    and values one per line, as redis-cli prints them) say the group of NODE_COUNT hosts is whole: a quorum to fail
    over, and a primary with every other host as its replica and every other host's sentinel watching it."""
    lines = [str(line) for line in answer_lines or []]
    primary = dict(zip(lines[2::2], lines[3::2], strict=False))
    others = str(int(node_count) - 1)
    return (
        len(lines) > 1
        and lines[1].startswith("OK ")
        and primary.get("flags") == "master"
        and primary.get("num-slaves") == others
        and primary.get("num-other-sentinels") == others
    )


class FilterModule:
    def filters(self):
        return {
            "redis_sentinel": redis_sentinel,
            "broker_hosts_as_sentinel_nodes": broker_hosts_as_sentinel_nodes,
            "sentinel_group_whole": sentinel_group_whole,
        }
