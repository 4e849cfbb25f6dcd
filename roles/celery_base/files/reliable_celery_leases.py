"""Visibility leases for kombu's Redis transport, installed by reliable.celery beside the wrapper.

kombu's Redis transport keeps every message a worker holds (running, reserved or waiting for its
ETA) in the ``unacked`` hash, with the time it was delivered as its score in ``unacked_index``;
any worker's sweep puts a message whose score is older than ``visibility_timeout`` back in its
queue. So the visibility timeout had to outlast the longest task, and a crashed worker's
messages came back only that long after the crash. With leases:

- renewal: the worker rewrites the score of each message it holds (``ZADD XX``: never re-adds one
  acked or restored meanwhile) every quarter of the visibility timeout, from a timer on its own
  event loop, the thread that owns the connection (during a warm shutdown, which closes the event
  loop before the running tasks end, from a thread of the wrapper). The visibility timeout becomes
  the time a *dead* worker's messages stay invisible, not the longest task;
- a record per node: the same transaction stores which tags the node holds and the score it
  wrote for each (``reliable-celery.leases.NODE``; no expiry: Redis replays a transaction's
  PEXPIRE from its append-only file as PEXPIREAT, which the broker's ACL for workers does not
  grant, and a worker that holds nothing deletes its record);
- an atomic fetch: one Lua script (``FETCH``) pops a message and writes it to ``unacked``, its
  score and its record. kombu fetches with BRPOP, which pops the message, and appends it to
  ``unacked`` once the worker has read the reply: a worker frozen or killed in between lost it (of
  3 tasks sent to an idle worker whose main process was then stopped, systemd's watchdog aborted
  it with one in the unread reply, and that one never ran). A script cannot block as BRPOP does:
  when no queue has a message, the channel fetches again after ``FETCH_IDLE_SECONDS``;
- running tasks held through reconnects: kombu puts back in their queues the messages a channel
  holds when the channel closes, and a worker closes its dropped connection's channel when it
  reconnects, while some of those tasks still run: they would run again elsewhere (seen after a
  0.3 s Redis restart). The wrapper takes the messages of running tasks out of what the dropped
  channel puts back (the rest, reserved and ETA messages, Celery forgets at a reconnect: those go
  back as before and are no longer leased here), and keeps that channel's connection pool, through
  which the running tasks ack as they end (a closed channel makes no new pool);
- renewed until acked: a lease is renewed until its message's ack was sent, not until Celery
  asked for it: during a warm shutdown Celery sends the acks of the tasks that end only once the
  pool has drained. An ack that failed (Redis was down) leaves the lease renewed until the worker
  stops; its task then runs again;
- restore on restart: a worker that starts finds its node's record (left by a predecessor that
  did not shut down cleanly: a clean shutdown leaves no tag it still holds) and puts back each
  message whose score is still the one its predecessor wrote. Another worker that received the
  message since would have written another score; and when a unit's main process dies, systemd
  SIGKILLs what is left of its cgroup and starts it again only once the cgroup is empty, so no
  process of the predecessor can still run such a message.
- requeue at the head: a message rejected with requeue goes back where the next fetch takes it, as
  RabbitMQ requeues, not behind the whole queue as kombu puts it. Celery so rejects the task of a
  killed pool process (reject on worker lost), which started again only after the backlog.

Everything here uses kombu's and Celery's private attributes: ``probe`` checks them, and the wrapper falls
back to a visibility timeout that outlasts the longest task when they differ.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from queue import Empty

import kombu
from kombu.transport import virtual
from kombu.utils.json import dumps

logger = logging.getLogger("reliable_celery.leases")

RECORD_KEY = "reliable-celery.leases.%s"
RENEWALS_PER_TIMEOUT = 4
# kombu minors whose Redis transport was read and tested with this module.
KOMBU_MINORS = ("5.7",)
# (object path, attribute) pairs this module calls, or whose behaviour it relies on (the sweep).
REQUIRED = (
    ("kombu.transport.redis.QoS", "append"),
    ("kombu.transport.virtual.QoS", "append"),
    ("kombu.transport.redis.Channel", "_do_restore_message"),
    ("kombu.transport.redis.Channel", "conn_or_acquire"),
    ("kombu.transport.redis.Channel", "unacked_key"),
    ("kombu.transport.redis.Channel", "unacked_index_key"),
    ("kombu.transport.redis.Channel", "visibility_timeout"),
    ("kombu.transport.redis.QoS", "restore_visible"),
    ("kombu.transport.redis.QoS", "restore_by_tag"),
    ("kombu.transport.virtual.QoS", "ack"),
    ("kombu.transport.redis.Channel", "_pool"),
    ("kombu.transport.virtual.QoS", "_delivered"),
    ("celery.worker.consumer.consumer.Consumer", "on_connection_error_after_connected"),
    ("kombu.transport.redis.Channel", "_brpop_start"),
    ("kombu.transport.redis.Channel", "_brpop_read"),
    ("kombu.transport.redis.Channel", "_q_for_pri"),
    ("kombu.transport.redis.Channel", "_flush_brpop_reauth"),
    ("kombu.transport.redis.Channel", "priority_steps"),
)
# An idle channel (no queue had a message) fetches again after this many seconds: the worker's event loop looks
# this often (the wrapper's timer), and a task waits this long at most for an idle worker.
FETCH_IDLE_SECONDS = 0.1
# KEYS: the queue keys in BRPOP's order, then unacked_index, unacked and the node's record; ARGV[1]: the score as
# JSON. Pops the message of the first key that has one and writes what kombu's QoS.append and record_deliveries
# would write, the payload as it came (a JSON object) in the entry kombu restores from. Returns the key and the
# payload, or nil.
FETCH = """
local queues = #KEYS - 3
for i = 1, queues do
  local payload = redis.call('RPOP', KEYS[i])
  if payload then
    local properties = cjson.decode(payload)['properties']
    local tag, info = properties['delivery_tag'], properties['delivery_info']
    redis.call('ZADD', KEYS[queues + 1], ARGV[1], tag)
    redis.call('HSET', KEYS[queues + 2], tag,
      '[' .. payload .. ', ' .. cjson.encode(info['exchange']) .. ', ' .. cjson.encode(info['routing_key']) .. ']')
    redis.call('SADD', KEYS[queues + 3], '[' .. cjson.encode(tag) .. ', ' .. ARGV[1] .. ']')
    return {KEYS[i], payload}
  end
end
return false
"""


def probe() -> str | None:
    """None when this kombu is one leases were built for, else why not (one line)."""
    minor = ".".join(kombu.__version__.split(".")[:2])
    if minor not in KOMBU_MINORS:
        return f"kombu {kombu.__version__} is not one of {', '.join(KOMBU_MINORS)}.x"
    for path, attribute in REQUIRED:
        module_name, _, class_name = path.rpartition(".")
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            return f"{path} is missing ({error})"
        if not hasattr(owner, attribute):
            return f"{path}.{attribute} is missing"
    return None


def _member(tag: str, score: float) -> str:
    return json.dumps([tag, score])


class Leases:
    """The leases of one worker node: what it holds, renewed from its event loop."""

    def __init__(self, visibility_timeout: float, clock=time.time) -> None:
        self.visibility_timeout = float(visibility_timeout)
        self.clock = clock
        self.node = None  # the worker's node name, known once its consumer exists
        self.held: dict[str, object] = {}  # delivery tag -> Celery request
        self.channel = None
        self.fetched: set[str] = set()  # tags FETCH recorded, until kombu appends them
        self.fetching = None  # the channel that fetches with FETCH

    @property
    def record_key(self) -> str:
        return RECORD_KEY % self.node

    @property
    def interval(self) -> float:
        return self.visibility_timeout / RENEWALS_PER_TIMEOUT

    def record_deliveries(self, qos) -> None:
        """kombu's Redis QoS.append for the channel of QOS (the message in ``unacked`` and its
        score in ``unacked_index``), with the message recorded in the same transaction."""

        def append(message, delivery_tag):
            if delivery_tag in self.fetched:
                self.fetched.discard(delivery_tag)
                return virtual.QoS.append(qos, message, delivery_tag)
            delivery = message.delivery_info
            entry = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
            score = self.clock()
            with qos.channel.conn_or_acquire() as client:
                pipe = client.pipeline()
                pipe.zadd(qos.unacked_index_key, {delivery_tag: score})
                pipe.hset(qos.unacked_key, delivery_tag, entry)
                pipe.sadd(self.record_key, _member(delivery_tag, score))
                pipe.execute()
            virtual.QoS.append(qos, message, delivery_tag)

        qos.append = append

    def fetch_atomically(self, channel) -> None:
        """CHANNEL (kombu's Redis channel of the task consumer, not polling yet) fetches with FETCH instead of
        BRPOP. kombu's event loop starts a fetch when the channel may take a message and reads it when its reply
        comes, as it does BRPOP."""
        from redis.exceptions import NoScriptError, ResponseError  # noqa: PLC0415 - RabbitMQ's workers lack redis

        try:
            sha = channel.client.script_load(FETCH)
        except ResponseError as error:  # a broker of the user's own whose ACL refuses scripts: kombu's BRPOP
            logger.warning("fetching with BRPOP, which loses a message popped by a worker that dies: %s", error)
            return
        prefix = channel.global_keyprefix or ""
        idle_until = 0.0

        def start(timeout=None):
            if time.monotonic() < idle_until:
                return
            queues = channel._queue_cycle.consume(len(channel.active_queues))
            if not queues:
                return
            keys = [channel._q_for_pri(queue, pri) for pri in channel.priority_steps for queue in queues]
            keys += [channel.unacked_index_key, channel.unacked_key, self.record_key]
            channel._in_poll = channel.client.connection
            channel._brpop_sent_at = time.monotonic()
            channel.client.connection.send_command(
                "EVALSHA", sha, len(keys), *(prefix + key for key in keys), json.dumps(self.clock())
            )

        def read(**options):
            nonlocal sha, idle_until
            try:
                try:
                    reply = channel.client.parse_response(channel.client.connection, "EVALSHA", **options)
                except channel.connection_errors:
                    channel.client.connection.disconnect()
                    raise
                except NoScriptError:  # the server's scripts were flushed: load it again, fetch at the next look
                    sha = channel.client.script_load(FETCH)
                    raise Empty() from None
                if not reply:
                    idle_until = time.monotonic() + FETCH_IDLE_SECONDS
                    raise Empty()
                key, payload = (_text(value) for value in reply)
                message = json.loads(payload)
                self.fetched.add(message["properties"]["delivery_tag"])
                queue = key[len(prefix) :].rsplit(channel.sep, 1)[0]
                channel._queue_cycle.rotate(queue)
                channel.connection._deliver(message, queue)
                return True
            finally:
                channel._in_poll = None
                channel._flush_brpop_reauth()

        channel._brpop_start = start
        channel._brpop_read = channel.handlers["BRPOP"] = read
        self.fetching = channel

    def next_round_seconds(self, channel) -> float:
        """At most how long CHANNEL takes to fetch from a queue it has just begun to consume: FETCH looks again within
        FETCH_IDLE_SECONDS, while kombu's BRPOP under way asks only for the queues consumed when it was sent, for up
        to brpop_timeout. 0 on AMQP, whose broker delivers as soon as a queue is consumed."""
        if channel is self.fetching:
            return FETCH_IDLE_SECONDS
        return getattr(channel, "brpop_timeout", 0)

    @staticmethod
    def requeue_at_head(qos) -> None:
        """kombu's Redis QoS.reject for the channel of QOS, with a message rejected with requeue put back
        at the head of its queue (see the module's docstring)."""
        reject = qos.reject

        def reject_at_head(delivery_tag, requeue=False):
            if not requeue:
                return reject(delivery_tag, requeue)
            qos.restore_by_tag(delivery_tag, leftmost=False)
            return virtual.QoS.ack(qos, delivery_tag)

        qos.reject = reject_at_head

    def received(self, request) -> None:
        """The message of a task request the worker now holds (recorded at its fetch): renew its lease."""
        self.held[request.message.delivery_tag] = request

    def renew(self) -> int:
        """Renew the lease of every message still held; the record holds exactly those. Returns how many."""
        for tag in [tag for tag, request in self.held.items() if request.message.acknowledged]:
            del self.held[tag]
        channel = self.channel
        if channel is None:
            return 0
        tags, score = list(self.held), self.clock()
        with channel.conn_or_acquire() as client:
            pipe = client.pipeline()
            if tags:
                pipe.zadd(channel.unacked_index_key, dict.fromkeys(tags, score), xx=True)
            pipe.delete(self.record_key)
            if tags:
                pipe.sadd(self.record_key, *(_member(tag, score) for tag in tags))
            pipe.execute()
        return len(tags)

    def restore_predecessor(self, channel) -> list[str]:
        """Put back in their queues the messages this node's record names whose lease is still the
        one recorded (nobody received them since). Returns their tags."""
        restored = []
        with channel.conn_or_acquire() as client:
            members = client.smembers(self.record_key)
            for member in members:
                tag, score = json.loads(member)
                if self._restore_if_unchanged(client, channel, tag, score):
                    restored.append(tag)
            client.delete(self.record_key)
        return restored

    @staticmethod
    def _restore_if_unchanged(client, channel, tag, score) -> bool:
        index, unacked = channel.unacked_index_key, channel.unacked_key

        def transaction(pipe):
            # ZRANGE, not ZSCORE: kombu's global_keyprefix client prefixes the one, not the other.
            if tag not in {_text(member) for member in pipe.zrange(index, score, score, byscore=True)}:
                return False
            payload = pipe.hget(unacked, tag)
            pipe.multi()
            pipe.zrem(index, tag)
            pipe.hdel(unacked, tag)
            if payload:
                body, exchange, routing_key = json.loads(payload)
                # kombu publishes with LPUSH and consumes with BRPOP: RPUSH (leftmost=False) puts
                # the message where the next BRPOP takes it, not behind the whole queue.
                channel._do_restore_message(body, exchange, routing_key, pipe, leftmost=False)
            return True

        return client.transaction(transaction, index, unacked, value_from_callable=True)


def hold_through_reconnects(consumer, leases: Leases, in_the_pool) -> None:
    """At a Celery consumer's connection loss, keep the messages of its running tasks (``in_the_pool(request)``)
    unacked, and their channel able to ack them; stop leasing the messages it puts back."""
    on_connection_lost = consumer.on_connection_error_after_connected

    def keep_running_tasks(exc):
        channel = consumer.task_consumer.channel if consumer.task_consumer is not None else None
        if channel is None:
            return on_connection_lost(exc)
        for tag, request in list(leases.held.items()):
            if request.acknowledged or in_the_pool(request):  # running, or its ack waits in the event loop
                channel.qos._delivered.pop(tag, None)
            elif request.message.channel is channel:  # Celery forgets it: kombu puts it back
                del leases.held[tag]
        pool = getattr(channel, "_pool", None)
        try:
            return on_connection_lost(exc)
        finally:
            if getattr(channel, "_pool", None) is None and pool is not None:
                channel._pool = pool

    consumer.on_connection_error_after_connected = keep_running_tasks


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value
