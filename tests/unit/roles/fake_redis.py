"""An in-memory stand-in for the Redis commands the workers' lease and poison modules send."""

from __future__ import annotations

from contextlib import nullcontext

from kombu.transport import redis as redis_transport

INDEX, UNACKED = "unacked_index", "unacked"


class FakeRedis:
    """The keys: sorted sets and sets as dicts/sets; lists of restored messages per queue."""

    def __init__(self) -> None:
        self.zsets: dict[str, dict[str, float]] = {INDEX: {}}
        self.hashes: dict[str, dict[str, str]] = {UNACKED: {}}
        self.sets: dict[str, set[str]] = {}
        self.lists: dict[str, list[str]] = {}  # kombu's queues: LPUSH publishes, BRPOP takes the last
        self.queued = False

    # a pipeline runs each command at once: the tests need no MULTI semantics; commands chain as in redis-py
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
        return self

    def zrange(self, key, low, high, byscore=False):
        assert byscore
        return [member.encode() for member, score in self.zsets.get(key, {}).items() if low <= score <= high]

    def zrem(self, key, member):
        self.zsets.get(key, {}).pop(member, None)
        return self

    def hget(self, key, field):
        return self.hashes.get(key, {}).get(field)

    def hset(self, key, field, value):
        self.hashes.setdefault(key, {})[field] = value
        return self

    def hdel(self, key, field):
        self.hashes.get(key, {}).pop(field, None)
        return self

    def rpush(self, key, value):
        self.lists.setdefault(key, []).append(value)
        return self

    def lpush(self, key, value):
        self.lists.setdefault(key, []).insert(0, value)
        return self

    def sadd(self, key, *members):
        self.sets.setdefault(key, set()).update(members)
        return self

    def smembers(self, key):
        return {member.encode() for member in self.sets.get(key, set())}

    def delete(self, key):
        self.sets.pop(key, None)
        return self


class RedisChannel(redis_transport.Channel):
    """kombu's Redis channel (its priorities, keys and class) on FakeRedis, routing each message to
    the queue its routing key names."""

    def __init__(self, redis: FakeRedis) -> None:  # no connection: the fake is the client
        self.redis = redis

    def conn_or_acquire(self, client=None):
        return nullcontext(self.redis)

    def _lookup(self, exchange, routing_key, default=None):
        return [routing_key]
