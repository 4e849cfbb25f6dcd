# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The redis_acl filter: celery_broker_redis_users checked and turned into Redis ACL rules."""

from __future__ import annotations

import hashlib
import re

from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.module_utils._versions import major_minor

ADMIN_USER = "celery-broker-admin"
# With Sentinel (plugins/filter/redis_sentinel.py) the servers and sentinels log in to each other as two users of
# their own, with celery_broker_redis_sentinel_password: a replica to its primary, a sentinel to a server and to the
# other sentinels.
REPLICA_USER = "celery-broker-replica"
SENTINEL_USER = "celery-broker-sentinel"
RESERVED_NAMES = (ADMIN_USER, REPLICA_USER, SENTINEL_USER, "default")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Whitespace and quotes would break redis-cli's line syntax the role checks passwords with.
PASSWORD_REFUSED = re.compile(r"[\s\"'\\\x00-\x1f\x7f]")
MIN_PASSWORD_LENGTH = 16
MAX_PASSWORDS = 3
KEYS = ("name", "role", "passwords")

# What each client runs, read from kombu 5.7's transport/redis.py and celery 5.7's
# backends/redis.py and flower 2.2, and seen with MONITOR under a real worker, beat and Flower
# (docs/security.md). Commands inside Lua scripts (kombu's bindings, celery's chords, the workers'
# fetch: RPOP, ZADD, HSET, SADD) are checked against the calling user too, so they are listed here
# as well. Nothing of @admin or @dangerous.
_CONNECTION = ("ping", "hello", "select", "echo")
_TRANSACTIONS = ("multi", "exec", "discard", "watch", "unwatch")
_SCRIPTS = ("evalsha", "eval", "script|load", "script|exists")
# Sending a task or a broadcast: the queue's binding (Lua REFRESH_BINDING/SWEEP_BINDINGS), the push,
# fanout publishes, expiring reply queues, purge and delete.
_PUBLISH = (
    "lpush", "sadd", "smembers", "srem", "exists", "del", "pexpire", "publish", "time",
    "zadd", "zrangebyscore", "zrem", "llen",
)  # fmt: skip
# Consuming: BRPOP/RPOP, the unacked hash and index with its restore mutex (redis-py's Lock:
# SET NX PX, released by a Lua GET+DEL), fanout and event subscriptions.
_CONSUME = (
    "brpop", "rpop", "hset", "hget", "hdel", "zrange", "set", "get", "pexpire",
    "subscribe", "unsubscribe", "psubscribe", "punsubscribe",
)  # fmt: skip
# Celery's Redis result backend: results, their expiry and pub/sub, groups and chords (Lua).
_RESULTS = (
    "get", "mget", "set", "setex", "del", "expire", "incr", "incrby", "rpush", "lrange", "llen",
    "zadd", "zcount", "zrange", "sadd", "sismember", "publish", "subscribe", "unsubscribe", "exists",
)  # fmt: skip

ROLE_COMMANDS = {
    "worker": _CONNECTION + _TRANSACTIONS + _SCRIPTS + _PUBLISH + _CONSUME + _RESULTS,
    # Beat only sends tasks.
    "beat": _CONNECTION + _TRANSACTIONS + _SCRIPTS + _PUBLISH,
    # Flower broadcasts inspect commands and consumes their replies and the workers' events;
    # it reads queue lengths (LLEN); it does not use the result backend.
    "flower": _CONNECTION + _TRANSACTIONS + _SCRIPTS + _PUBLISH + _CONSUME,
}
ROLES = tuple(ROLE_COMMANDS)
# redis-py names itself with CLIENT SETINFO on every connection. It ignores a refusal, but the
# server logs each one in its ACL log. Redis 7.2 added the command (an older server refuses to
# grant it); Valkey's versions continue from Redis 7.2.
CLIENT_SETINFO_SINCE = (7, 2)


def role_commands(role):
    """The commands a client role may run, unique and sorted."""
    return sorted(set(ROLE_COMMANDS[role]))


def _password_hash(password):
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def check_password(password, where):
    if not isinstance(password, str):
        raise AnsibleFilterError(f"{where} must be a string, got {type(password).__name__}")
    if len(password) < MIN_PASSWORD_LENGTH or PASSWORD_REFUSED.search(password):
        raise AnsibleFilterError(
            f"{where} must be at least {MIN_PASSWORD_LENGTH} characters without whitespace, quotes or backslashes "
            "(clients percent-encode it in their URLs: reliable.celery.url_quote)"
        )


def _check_user(user, index, variable):
    where = f"{variable}[{index}]"
    if not isinstance(user, dict):
        raise AnsibleFilterError(f"{where} must be a dict with keys {', '.join(KEYS)}")
    unknown = sorted(set(user) - set(KEYS))
    if unknown:
        raise AnsibleFilterError(f"{where} has unknown keys {', '.join(map(str, unknown))}; allowed: {', '.join(KEYS)}")
    name = user.get("name")
    if not isinstance(name, str) or not NAME.match(name) or name in RESERVED_NAMES:
        raise AnsibleFilterError(
            f"{where}.name must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit, "
            f"and none of {', '.join(RESERVED_NAMES)} (the role's own; celery_broker_password gives default a password)"
        )
    role = user.get("role")
    if role not in ROLES:
        raise AnsibleFilterError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
    passwords = user.get("passwords")
    if not isinstance(passwords, list) or not 1 <= len(passwords) <= MAX_PASSWORDS:
        raise AnsibleFilterError(
            f"{where}.passwords must be a list of 1 to {MAX_PASSWORDS} passwords "
            "(two while a password is rotated: the old one first, the new one last)"
        )
    for number, password in enumerate(passwords):
        check_password(password, f"{where}.passwords[{number}]")
    if len(set(passwords)) != len(passwords):
        raise AnsibleFilterError(f"{where}.passwords holds the same password twice")
    return name, role, passwords


def _version(server_version):
    try:
        return major_minor(server_version)
    except ValueError:
        raise AnsibleFilterError(f"redis_acl: server_version must be MAJOR.MINOR, got {server_version!r}") from None


def _allowed(commands, server_version="7.0"):
    """-@all and COMMANDS, with CLIENT SETINFO where the server knows it."""
    commands = list(commands)
    if _version(server_version) >= CLIENT_SETINFO_SINCE:
        commands.append("client|setinfo")
    return "-@all " + " ".join(f"+{command}" for command in commands)


def _login(passwords):
    """An enabled user with PASSWORDS, as hashes."""
    return "on " + " ".join(f"#{_password_hash(password)}" for password in passwords)


def _permissions(role, server_version="7.0"):
    # Queue names are the app's own, so every key; fanout and event channels, so every channel.
    return "~* &* " + _allowed(role_commands(role), server_version)


def _rules(role, passwords, server_version):
    return f"{_login(passwords)} {_permissions(role, server_version)}"


# Nobody can log in as a disabled default user, but Redis replays the append-only file's
# transactions (MULTI/EXEC: kombu's unacked index, restored messages) as that user and silently
# drops each command the user may not run (valkey-io/valkey#3983, Redis 7.0 and 8.0 alike): so it
# keeps the commands of every client's transactions, a worker's.
DISABLED_DEFAULT_RULES = f"off resetpass {_permissions('worker')}"


# The commands of the Sentinel users: a replica's to its primary, and a sentinel's to a server (those Redis' Sentinel
# documentation lists; at a failover SLAVEOF and CONFIG REWRITE inside MULTI, which one refused command would void).
_REPLICA_COMMANDS = ("psync", "replconf", "ping")
_SENTINEL_COMMANDS = (
    "multi", "exec", "slaveof", "replicaof", "ping", "subscribe", "publish", "config|rewrite", "role", "info",
    "client|setname", "client|kill", "script|kill",
)  # fmt: skip
# What redis-py's Sentinel client asks a sentinel: the primary of a name, its replicas and the other sentinels.
_SENTINEL_CLIENT_COMMANDS = (
    "ping", "hello", "sentinel|masters", "sentinel|master", "sentinel|get-master-addr-by-name",
    "sentinel|slaves", "sentinel|replicas", "sentinel|sentinels",
)  # fmt: skip


def _internal_rules(commands, password):
    return f"{_login([password])} &* -@all " + " ".join(f"+{command}" for command in commands)


def redis_acl(  # noqa: PLR0913 - a Jinja filter's keyword arguments
    users,
    admin_password,
    legacy_password=None,
    *,
    variable="celery_broker_redis_users",
    server_version="7.0",
    sentinel_password=None,
):
    """The ACL users for USERS: a list of dicts {name, rules}, ``default`` and the role's admin included.

    Each rule set starts from nothing: ``ACL SETUSER NAME reset RULES`` and ``user NAME RULES``
    in an aclfile give the same user. Passwords appear only as SHA-256 hashes. With no USERS,
    LEGACY_PASSWORD (celery_broker_password) becomes the ``default`` user's, as a worker: old
    ``redis://:PASSWORD@`` URLs keep working without the rights of an administrator.
    SERVER_VERSION (MAJOR.MINOR of Redis, or of Valkey) decides which commands the server knows. With
    SENTINEL_PASSWORD, the users replicas and sentinels log in with are appended.
    """
    checked = _checked_users(users, legacy_password, variable)
    if not isinstance(admin_password, str) or not admin_password:
        raise AnsibleFilterError("redis_acl: the admin password is missing")
    names = [name for name, _role, _passwords in checked]
    acl = [{"name": name, "rules": _rules(role, passwords, server_version)} for name, role, passwords in checked]
    if "default" not in names:
        acl.insert(0, {"name": "default", "rules": DISABLED_DEFAULT_RULES})
    acl.append({"name": ADMIN_USER, "rules": f"{_login([admin_password])} ~* &* +@all"})
    if sentinel_password:
        acl.append({"name": REPLICA_USER, "rules": _internal_rules(_REPLICA_COMMANDS, sentinel_password)})
        acl.append({"name": SENTINEL_USER, "rules": _internal_rules(_SENTINEL_COMMANDS, sentinel_password)})
    return acl


def sentinel_acl(users, sentinel_password, legacy_password=None, server_version="7.0"):
    """The ACL users of a sentinel: each client's (USERS, as redis_acl checks them) with only what a client asks a
    sentinel, the other sentinels' with SENTINEL_PASSWORD, ``default`` disabled unless it is the legacy user."""
    checked = _checked_users(users, legacy_password, "celery_broker_redis_users")
    allowed = _allowed(_SENTINEL_CLIENT_COMMANDS, server_version)
    acl = [{"name": name, "rules": f"{_login(passwords)} {allowed}"} for name, _role, passwords in checked]
    if "default" not in [user["name"] for user in acl]:
        acl.insert(0, {"name": "default", "rules": "off resetpass -@all"})
    acl.append({"name": SENTINEL_USER, "rules": f"{_login([sentinel_password])} ~* &* +@all"})
    return acl


def _checked_users(users, legacy_password, variable):
    """USERS checked: (name, role, passwords) each; with none, the legacy password's default user."""
    if users is None:
        users = []
    if not isinstance(users, list):
        raise AnsibleFilterError(f"{variable} must be a list of {{name, role, passwords}}")
    if not users:
        if legacy_password is None or legacy_password == "":
            raise AnsibleFilterError(
                f"{variable} must list the clients' users (or celery_broker_password must be set: "
                "the password of the default user, for workers)"
            )
        check_password(legacy_password, "celery_broker_password")
        checked = [("default", "worker", [legacy_password])]
    else:
        checked = [_check_user(user, index, variable) for index, user in enumerate(users)]
    names = [name for name, _role, _passwords in checked]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise AnsibleFilterError(f"{variable} names a user twice: {', '.join(duplicates)}")
    return checked


def _hashes(rules):
    return {token[1:] for token in rules.split() if token.startswith("#")}


def redis_acl_replaced(acl, live_acl_list):
    """The users of ACL that Redis (LIVE_ACL_LIST: the lines of ``ACL LIST``) knows with passwords
    none of which ACL keeps: their clients still on an old password would be locked out."""
    live = {}
    for line in live_acl_list or []:
        words = line.split(" ", 2)
        if len(words) == 3 and words[0] == "user":
            live[words[1]] = _hashes(words[2])
    replaced = []
    for user in acl:
        wanted = _hashes(user["rules"])
        if user["name"] != ADMIN_USER and wanted and live.get(user["name"]) and not wanted & live[user["name"]]:
            replaced.append(user["name"])
    return replaced


class FilterModule:
    def filters(self):
        return {"redis_acl": redis_acl, "redis_acl_replaced": redis_acl_replaced, "sentinel_acl": sentinel_acl}
