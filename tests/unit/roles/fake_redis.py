"""An in-memory stand-in for the Redis commands the workers' lease and poison modules send."""

from __future__ import annotations

INDEX, UNACKED = "unacked_index", "unacked"


class FakeRedis:
    """The keys: sorted sets and sets as dicts/sets; lists of restored messages per queue."""

    def __init__(self) -> None:
        self.zsets: dict[str, dict[str, float]] = {INDEX: {}}
        self.hashes: dict[str, dict[str, str]] = {UNACKED: {}}
        self.sets: dict[str, set[str]] = {}
        self.lists: dict[str, list[str]] = {}  # kombu's queues: LPUSH publishes, BRPOP takes the last
        self.queued = False

    # a pipeline runs each command at once: the tests need no MULTI semantics
    def pipeline(self):
        return self

    def execute(self) -> list:
        return []

    def multi(self) -> None:
        self.queued = True

    def transaction(self, func, *watches, value_from_callable=False):
        value = func(self)
        return value if value_from_callable else []

    def zadd(self, key, mapping, xx=False):
        zset = self.zsets.setdefault(key, {})
        for member, score in mapping.items():
            if not xx or member in zset:
                zset[member] = score

    def zrange(self, key, low, high, byscore=False):
        assert byscore
        return [member.encode() for member, score in self.zsets.get(key, {}).items() if low <= score <= high]

    def zrem(self, key, member):
        self.zsets.get(key, {}).pop(member, None)

    def hget(self, key, field):
        return self.hashes.get(key, {}).get(field)

    def hset(self, key, field, value):
        self.hashes.setdefault(key, {})[field] = value

    def hdel(self, key, field):
        self.hashes.get(key, {}).pop(field, None)

    def rpush(self, key, value):
        self.lists.setdefault(key, []).append(value)

    def lpush(self, key, value):
        self.lists.setdefault(key, []).insert(0, value)

    def sadd(self, key, *members):
        self.sets.setdefault(key, set()).update(members)

    def smembers(self, key):
        return {member.encode() for member in self.sets.get(key, set())}

    def delete(self, key):
        self.sets.pop(key, None)
