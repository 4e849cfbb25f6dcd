from __future__ import annotations

import hashlib

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.redis_acl import (
    ROLE_COMMANDS,
    redis_acl,
    redis_acl_replaced,
    role_commands,
    sentinel_acl,
)

OLD = "Old/Secret#with?reserved@chars%40"
NEW = "New-Secret:4b1e93a7/0d2c9e"
ADMIN = "admin-secret-0123456789abcdef"
USERS = [
    {"name": "worker", "role": "worker", "passwords": [OLD, NEW]},
    {"name": "beat", "role": "beat", "passwords": [NEW]},
    {"name": "flower", "role": "flower", "passwords": [NEW]},
]
# Redis 7.0's @admin and @dangerous commands a client could hurt the broker or read others' data with.
FORBIDDEN = {
    "config", "flushall", "flushdb", "shutdown", "debug", "keys", "acl", "monitor", "save", "bgsave",
    "bgrewriteaof", "replicaof", "slaveof", "sync", "psync", "migrate", "restore", "sort", "client",
    "module", "failover", "cluster", "info", "lastsave", "latency", "slowlog", "swapdb", "pfdebug",
    "pfselftest", "role", "script|flush", "script|kill", "function", "object",
}  # fmt: skip


def sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def by_name(acl: list[dict]) -> dict[str, str]:
    return {user["name"]: user["rules"] for user in acl}


def test_each_user_gets_the_hashes_of_its_passwords_only() -> None:
    acl = by_name(redis_acl(USERS, ADMIN))
    assert f"#{sha(OLD)} #{sha(NEW)}" in acl["worker"]
    assert f"#{sha(NEW)}" in acl["beat"]
    assert f"#{sha(OLD)}" not in acl["beat"]
    for password in (OLD, NEW, ADMIN):
        assert password not in repr(acl)


def test_the_default_user_is_disabled_and_the_admin_appended() -> None:
    acl = redis_acl(USERS, ADMIN)
    # Off, with a worker's commands: Redis replays the append-only file's transactions as default.
    worker = by_name(redis_acl([{"name": "x", "role": "worker", "passwords": [NEW]}], ADMIN))["x"]
    assert acl[0] == {"name": "default", "rules": "off resetpass " + worker.split(" ", 2)[2]}
    assert acl[-1] == {"name": "celery-broker-admin", "rules": f"on #{sha(ADMIN)} ~* &* +@all"}
    assert [user["name"] for user in acl] == ["default", "worker", "beat", "flower", "celery-broker-admin"]


@pytest.mark.parametrize("role", sorted(ROLE_COMMANDS))
def test_no_client_role_may_administer_the_broker(role: str) -> None:
    assert FORBIDDEN.isdisjoint(role_commands(role))
    rules = by_name(redis_acl([{"name": "u", "role": role, "passwords": [NEW]}], ADMIN))["u"]
    assert rules.startswith(f"on #{sha(NEW)} ~* &* -@all +")
    assert "@all" not in rules.replace("-@all", "")


def test_beat_only_sends_and_flower_uses_no_result_backend() -> None:
    assert set(role_commands("beat")) < set(role_commands("flower")) < set(role_commands("worker"))
    assert "brpop" not in role_commands("beat")
    assert {"setex", "mget", "rpush"}.isdisjoint(role_commands("flower"))


def test_the_legacy_password_becomes_a_default_user_with_a_workers_rights() -> None:
    acl = by_name(redis_acl([], ADMIN, legacy_password=NEW))
    assert list(acl) == ["default", "celery-broker-admin"]
    assert acl["default"] == by_name(redis_acl([{"name": "x", "role": "worker", "passwords": [NEW]}], ADMIN))["x"]


@pytest.mark.parametrize("role", sorted(ROLE_COMMANDS))
def test_the_default_user_cannot_be_listed(role: str) -> None:
    # As beat or flower it could not replay the workers' transactions from the append-only file.
    with pytest.raises(AnsibleFilterError, match=r"redis_users\[0\]\.name .* none of celery-broker-admin, .*, default"):
        redis_acl([{"name": "default", "role": role, "passwords": [NEW]}], ADMIN)


@pytest.mark.parametrize(
    ("users", "legacy", "message"),
    [
        ([], None, "celery_broker_redis_users must list the clients' users (or celery_broker_password must be set"),
        ([], "short", "celery_broker_password must be at least 16 characters without whitespace"),
        ([], "a password with spaces", "celery_broker_password must be at least 16 characters without whitespace"),
        ("worker", None, "celery_broker_redis_users must be a list"),
        (["worker"], None, "celery_broker_redis_users[0] must be a dict"),
        ([{"name": "w", "role": "worker", "passwords": [NEW], "password": NEW}], None, "[0] has unknown keys password"),
        ([{"name": "a b", "role": "worker", "passwords": [NEW]}], None, "celery_broker_redis_users[0].name must be"),
        ([{"name": "celery-broker-admin", "role": "worker", "passwords": [NEW]}], None, "none of celery-broker-admin"),
        ([{"name": "w", "role": "admin", "passwords": [NEW]}], None, "[0].role must be one of worker, beat, flower"),
        ([{"name": "w", "role": "worker", "passwords": NEW}], None, "[0].passwords must be a list of 1 to 3"),
        ([{"name": "w", "role": "worker", "passwords": []}], None, "[0].passwords must be a list of 1 to 3"),
        ([{"name": "w", "role": "worker", "passwords": [NEW] * 4}], None, "[0].passwords must be a list of 1 to 3"),
        ([{"name": "w", "role": "worker", "passwords": [NEW, NEW]}], None, "[0].passwords holds the same"),
        ([{"name": "w", "role": "worker", "passwords": [NEW, 'x"' * 9]}], None, "[0].passwords[1] must be at least 16"),
        ([{"name": "w", "role": "worker", "passwords": [12345678901234567]}], None, "passwords[0] must be a string"),
        ([{"name": "w", "role": "worker", "passwords": [NEW]}] * 2, None, "redis_users names a user twice: w"),
    ],
)
def test_bad_users_are_refused_naming_the_variable_never_the_password(users, legacy, message: str) -> None:
    with pytest.raises(AnsibleFilterError) as error:
        redis_acl(users, ADMIN, legacy_password=legacy)
    assert message in str(error.value)
    assert NEW not in str(error.value)


def test_reserved_characters_are_accepted_in_passwords() -> None:
    for password in ("a/b#c?d@e%f:g&h=i+j[k]l$m", "%40%2F" * 4):
        assert redis_acl([{"name": "w", "role": "worker", "passwords": [password]}], ADMIN)


def live(acl: list[dict]) -> list[str]:
    """What `ACL LIST` prints for ACL (after the AUTH's OK)."""
    return ["OK", *(f"user {user['name']} {user['rules']}" for user in acl)]


def test_a_rotation_that_keeps_a_password_replaces_nothing() -> None:
    running = live(redis_acl([{"name": "worker", "role": "worker", "passwords": [OLD]}], ADMIN))
    both = redis_acl([{"name": "worker", "role": "worker", "passwords": [OLD, NEW]}], ADMIN)
    assert redis_acl_replaced(both, running) == []
    new_only = redis_acl([{"name": "worker", "role": "worker", "passwords": [NEW]}], ADMIN)
    assert redis_acl_replaced(new_only, live(both)) == []


def test_replacing_every_password_at_once_is_found() -> None:
    running = live(redis_acl(USERS, ADMIN))
    replaced = redis_acl(
        [{"name": "worker", "role": "worker", "passwords": ["Another-Secret-0123456789"]}, *USERS[1:]], ADMIN
    )
    assert redis_acl_replaced(replaced, running) == ["worker"]


def test_new_users_disabled_users_and_a_new_admin_password_are_no_replacement() -> None:
    running = live(redis_acl([], ADMIN, legacy_password=OLD))
    assert redis_acl_replaced(redis_acl(USERS, "another-admin-password"), running) == []
    assert redis_acl_replaced(redis_acl(USERS, ADMIN), []) == []


@pytest.mark.parametrize(("version", "granted"), [("7.0", False), ("7.2", True), ("8.0", True), ("8.1", True)])
def test_clients_may_name_themselves_where_the_server_knows_client_setinfo(version: str, granted: bool) -> None:
    """redis-py sends CLIENT SETINFO on every connection; Redis 7.0 refuses to grant an unknown command."""
    for user in redis_acl(USERS, ADMIN, server_version=version)[1:-1]:
        assert ("+client|setinfo" in user["rules"].split()) is granted, user["name"]


def test_a_server_version_that_is_no_version_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match=r"server_version must be MAJOR\.MINOR"):
        redis_acl(USERS, ADMIN, server_version="eight")


def test_with_sentinel_replicas_and_sentinels_get_users_of_their_own() -> None:
    acl = by_name(redis_acl(USERS, ADMIN, sentinel_password=NEW))
    digest = hashlib.sha256(NEW.encode()).hexdigest()
    assert acl["celery-broker-replica"] == f"on #{digest} &* -@all +psync +replconf +ping"
    assert "+slaveof" in acl["celery-broker-sentinel"]
    assert "+config|rewrite" in acl["celery-broker-sentinel"]
    assert "+flushall" not in acl["celery-broker-sentinel"]
    assert "~" not in acl["celery-broker-sentinel"]
    assert "celery-broker-replica" not in by_name(redis_acl(USERS, ADMIN))


def test_a_sentinels_clients_may_only_ask_where_the_primary_is() -> None:
    acl = by_name(sentinel_acl(USERS, NEW, server_version="8.0"))
    assert acl["default"] == "off resetpass -@all"
    worker = acl["worker"].split()
    assert worker[:3] == [
        "on",
        f"#{hashlib.sha256(OLD.encode()).hexdigest()}",
        f"#{hashlib.sha256(NEW.encode()).hexdigest()}",
    ]
    assert "-@all" in worker
    assert "+sentinel|get-master-addr-by-name" in worker
    assert "+client|setinfo" in worker
    assert not [rule for rule in worker if rule in ("+@all", "+sentinel|set", "+sentinel|failover", "+acl")]
    assert acl["celery-broker-sentinel"].endswith("~* &* +@all")
    assert OLD not in str(acl)
    assert NEW not in str(acl)


@pytest.mark.parametrize("name", ["celery-broker-replica", "celery-broker-sentinel"])
def test_the_sentinel_users_names_are_the_roles_own(name: str) -> None:
    with pytest.raises(AnsibleFilterError, match="none of celery-broker-admin"):
        redis_acl([{"name": name, "role": "worker", "passwords": [NEW]}], ADMIN)
