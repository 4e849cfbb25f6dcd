"""The lease logic of the wrapper (roles/celery_base/files/reliable_celery_leases.py) against an
in-memory stand-in for the Redis commands it sends; molecule's chaos-redis scenario runs it for real."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from queue import Empty
from types import SimpleNamespace

import kombu
import pytest
from kombu.transport import redis as redis_transport
from kombu.transport import virtual
from redis.exceptions import NoScriptError, ResponseError

sys.path.insert(0, str(Path(__file__).parents[3] / "roles" / "celery_base" / "files"))
import reliable_celery_leases as leases
from fake_redis import INDEX, UNACKED, FakeRedis, RedisChannel


class FakeChannel:
    unacked_index_key, unacked_key = INDEX, UNACKED
    do_restore = False  # kombu's QoS restores nothing of it when collected

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.restored: list[tuple[str, bool]] = []

    def conn_or_acquire(self):
        redis = self.redis

        class Context:
            def __enter__(self):
                return redis

            def __exit__(self, *_exc):
                return False

        return Context()

    def _do_restore_message(self, body, exchange, routing_key, pipe, leftmost=False):
        self.restored.append((body["id"], leftmost))


class FakeQoS(virtual.QoS):
    """kombu's own transactional state of a channel, with the Redis QoS's keys."""

    unacked_index_key, unacked_key = INDEX, UNACKED


class DeliveredMessage:
    """A message as kombu's Redis transport hands it to QoS.append after a fetch."""

    def __init__(self, tag: str) -> None:
        self._raw = {"id": tag}
        self.delivery_info = {"exchange": "celery", "routing_key": "celery"}


class FakeMessage:
    def __init__(self, channel: FakeChannel, tag: str) -> None:
        self.channel, self.delivery_tag, self.acknowledged = channel, tag, False


class FakeRequest:
    """A Celery request: acknowledged once Celery asked for its ack, which may be sent later."""

    def __init__(self, message) -> None:
        self.message, self.acknowledged = message, False


def delivered(node: leases.Leases, channel: FakeChannel, tag: str) -> FakeRequest:
    """A message fetched through the channel's QoS, as the worker's lease step wraps it, then
    received by Celery."""
    qos = FakeQoS(channel)
    node.record_deliveries(qos)
    qos.append(DeliveredMessage(tag), tag)
    request = FakeRequest(FakeMessage(channel, tag))
    node.received(request)
    return request


@pytest.fixture
def setup(clock):
    redis = FakeRedis()
    channel = FakeChannel(redis)
    node = leases.Leases(40, clock=clock)
    node.node, node.channel = "default@host", channel
    return redis, channel, clock, node


def record(redis: FakeRedis) -> dict[str, float]:
    return dict(json.loads(member) for member in redis.sets.get(leases.RECORD_KEY % "default@host", set()))


def test_a_message_is_recorded_as_kombu_delivers_it_before_celery_handles_it(setup) -> None:
    redis, channel, _clock, node = setup
    qos = FakeQoS(channel)
    node.record_deliveries(qos)
    qos.append(DeliveredMessage("t1"), "t1")
    assert redis.zsets[INDEX] == {"t1": 100.0}
    assert json.loads(redis.hashes[UNACKED]["t1"]) == [{"id": "t1"}, "celery", "celery"]
    assert list(qos._delivered) == ["t1"]  # kombu's own state, as its append keeps it
    assert record(redis) == {"t1": 100.0}
    assert node.held == {}, "renewed once Celery received it"
    assert node.interval == 10
    # The worker is killed before Celery handled it: its successor puts it back at once.
    successor = leases.Leases(40)
    successor.node = "default@host"
    assert successor.restore_predecessor(channel) == ["t1"]


def test_renewal_moves_every_held_lease_and_forgets_acked_messages(setup) -> None:
    redis, channel, clock, node = setup
    first, _second = delivered(node, channel, "t1"), delivered(node, channel, "t2")
    first.acknowledged = first.message.acknowledged = True
    del redis.zsets[INDEX]["t1"]  # kombu's ack
    clock.now = 110.0
    assert node.renew() == 1
    assert redis.zsets[INDEX] == {"t2": 110.0}, "renewal re-added an acked message"
    assert record(redis) == {"t2": 110.0}


def test_a_lease_is_renewed_until_the_ack_is_sent(setup) -> None:
    redis, channel, clock, node = setup
    request = delivered(node, channel, "t1")
    request.acknowledged = True  # in a warm shutdown, Celery sends the ack once the pool has drained
    clock.now = 110.0
    assert node.renew() == 1
    assert redis.zsets[INDEX] == {"t1": 110.0}


def test_renewal_never_re_adds_a_message_restored_meanwhile(setup) -> None:
    redis, channel, clock, node = setup
    delivered(node, channel, "t1")
    del redis.zsets[INDEX]["t1"]  # another worker's sweep put it back in its queue
    clock.now = 110.0
    node.renew()
    assert "t1" not in redis.zsets[INDEX]


def test_a_new_process_puts_back_what_its_predecessor_held(setup) -> None:
    redis, channel, _clock, node = setup
    delivered(node, channel, "t1")
    delivered(node, channel, "t2")
    successor = leases.Leases(40)
    successor.node = "default@host"
    assert sorted(successor.restore_predecessor(channel)) == ["t1", "t2"]
    # At the head of their queue (RPUSH, kombu's leftmost=False): they run before the backlog.
    assert sorted(channel.restored) == [("t1", False), ("t2", False)]
    assert redis.zsets[INDEX] == {}
    assert redis.hashes[UNACKED] == {}
    assert record(redis) == {}


def test_a_message_another_worker_received_since_is_left_alone(setup) -> None:
    redis, channel, _clock, node = setup
    delivered(node, channel, "t1")
    delivered(node, channel, "t2")
    redis.zsets[INDEX]["t1"] = 150.0  # restored after the lease ran out, and received by another worker
    del redis.zsets[INDEX]["t2"], redis.hashes[UNACKED]["t2"]  # acked before the crash
    successor = leases.Leases(40)
    successor.node = "default@host"
    assert successor.restore_predecessor(channel) == []
    assert channel.restored == []
    assert redis.zsets[INDEX] == {"t1": 150.0}


def test_a_message_rejected_with_requeue_goes_back_to_the_head_of_its_queue() -> None:
    """Celery rejects so the task of a killed pool process: kombu would put it behind the backlog."""
    redis = FakeRedis()
    qos = redis_transport.QoS(RedisChannel(redis))
    leases.Leases.requeue_at_head(qos)
    redis.lists["celery"] = ["backlog-2", "backlog-1"]  # BRPOP takes the last first
    for tag in ("t1", "t2"):
        redis.zsets[INDEX][tag] = 100.0
        redis.hashes[UNACKED][tag] = json.dumps([{"id": tag, "headers": {}, "properties": {}}, "", "celery"])
        virtual.QoS.append(qos, None, tag)
    qos.reject("t1", requeue=True)
    qos.reject("t2", requeue=False)
    assert [json.loads(payload)["id"] for payload in redis.lists["celery"][2:]] == ["t1"]
    assert redis.lists["celery"][:2] == ["backlog-2", "backlog-1"]
    assert redis.zsets[INDEX] == {}
    assert redis.hashes[UNACKED] == {}
    assert qos._dirty == {"t1", "t2"}  # kombu forgets them at its next flush


def test_the_kombu_of_this_collection_is_one_leases_were_built_for() -> None:
    assert leases.probe() is None


def test_another_kombu_minor_turns_leases_off(monkeypatch) -> None:
    monkeypatch.setattr(kombu, "__version__", "5.8.0")
    assert leases.probe() == "kombu 5.8.0 is not one of 5.7.x"


def test_a_missing_internal_turns_leases_off(monkeypatch) -> None:
    monkeypatch.delattr(redis_transport.Channel, "_do_restore_message")
    assert leases.probe() == "kombu.transport.redis.Channel._do_restore_message is missing"


class FakeConsumer:
    """Celery's consumer at a connection loss: it collects the dropped connection (closing its
    channels), as celery.worker.consumer.Consumer.on_connection_error_after_connected does."""

    def __init__(self, connection: kombu.Connection, queue: kombu.Queue) -> None:
        self.connection = connection
        self.task_consumer = kombu.Consumer(connection, [queue], no_ack=False)
        self.task_consumer.channel.do_restore = True  # as on Redis; the in-memory transport has it off

    def on_connection_error_after_connected(self, _exc) -> None:
        self.connection.collect()


@pytest.mark.parametrize("held", [True, False])
def test_a_reconnect_puts_back_what_celery_forgets_and_keeps_the_running_tasks(held: bool) -> None:
    """kombu's virtual channel, the base of its Redis one, on the in-memory transport."""
    queue = kombu.Queue(f"reconnect-{held}")
    with kombu.Connection("memory://") as producer:
        for task in ("running", "ended", "reserved"):
            producer.Producer().publish({"task": task}, routing_key=queue.name, declare=[queue])
        consumer = FakeConsumer(kombu.Connection("memory://"), queue)
        running, ended, reserved = (consumer.task_consumer.channel.basic_get(queue.name) for _attempt in range(3))
        node = leases.Leases(40)
        node.held = {message.delivery_tag: FakeRequest(message) for message in (running, ended, reserved)}
        node.held[ended.delivery_tag].acknowledged = True  # its ack waits in the event loop
        if held:
            leases.hold_through_reconnects(consumer, node, lambda request: request is node.held[running.delivery_tag])
        consumer.on_connection_error_after_connected(ConnectionError("dropped"))
        put_back = [
            message.payload["task"] for message in iter(lambda: producer.default_channel.basic_get(queue.name), None)
        ]
    assert sorted(put_back) == (["reserved"] if held else ["ended", "reserved", "running"])
    if held:
        assert list(node.held) == [running.delivery_tag, ended.delivery_tag], "a message put back is no longer leased"


class ScriptConnection:
    """The channel's own Redis connection: the command sent, the reply the server gives."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.reply = None

    def send_command(self, *args) -> None:
        self.sent.append(args)


class ScriptClient:
    def __init__(self, connection: ScriptConnection) -> None:
        self.connection = connection
        self.loaded = 0

    def script_load(self, script: str) -> str:
        assert script == leases.FETCH
        self.loaded += 1
        return "sha-fetch"

    def parse_response(self, connection, command, **_options):
        assert command == "EVALSHA"
        if isinstance(connection.reply, Exception):
            raise connection.reply
        return connection.reply


class FetchingChannel(RedisChannel):
    """kombu's Redis channel of a task consumer, what its event loop calls to fetch and what it delivers to."""

    global_keyprefix = ""
    do_restore = False  # kombu's QoS restores nothing of it at exit
    connection_errors = (ConnectionError,)

    def __init__(self, redis: FakeRedis) -> None:
        super().__init__(redis)
        self.client = ScriptClient(ScriptConnection())
        self._active_queues, self.active_fanout_queues = ["celery", "w1@host.dq2"], set()
        self._queue_cycle = redis_transport.cycle_by_name("round_robin")()
        self._queue_cycle.update(["celery", "w1@host.dq2"])
        self.handlers = {"BRPOP": self._brpop_read}
        self.delivered: list[tuple[dict, str]] = []
        self.connection = type("Transport", (), {"_deliver": lambda _self, message, queue: self.delivered.append(
            (message, queue))})()  # fmt: skip

    def _brpop_read(self, **_options):  # kombu's own
        return True

    def _flush_brpop_reauth(self) -> None:
        pass


@pytest.fixture
def fetching(clock):
    channel = FetchingChannel(FakeRedis())
    node = leases.Leases(40, clock=clock)
    node.node = "w1@host"
    node.fetch_atomically(channel)
    return channel, node, channel.client.connection


def payload(tag: str) -> str:
    return json.dumps({"body": "e30=", "headers": {"id": tag}, "properties": {"delivery_tag": tag,
                       "delivery_info": {"exchange": "celery", "routing_key": "celery"}}})  # fmt: skip


def test_a_fetch_pops_and_records_in_one_script_in_brpops_order_of_keys(fetching) -> None:
    channel, node, connection = fetching
    channel._brpop_start()
    [command] = connection.sent
    priority = [f"celery{channel.sep}{pri}" if pri else "celery" for pri in channel.priority_steps]
    direct = [f"w1@host.dq2{channel.sep}{pri}" if pri else "w1@host.dq2" for pri in channel.priority_steps]
    queue_keys = [key for pair in zip(priority, direct, strict=True) for key in pair]
    assert command == ("EVALSHA", "sha-fetch", len(queue_keys) + 3, *queue_keys, INDEX, UNACKED,
                       "reliable-celery.leases.w1@host", "100.0")  # fmt: skip
    assert channel._in_poll is connection
    connection.reply = [f"w1@host.dq2{channel.sep}3".encode(), payload("t1").encode()]
    assert channel.handlers["BRPOP"]() is True
    assert channel.delivered == [(json.loads(payload("t1")), "w1@host.dq2")]
    assert channel._in_poll is None
    # kombu appends it as it delivers it: the script wrote unacked, its score and the record already.
    qos = FakeQoS(channel)
    node.record_deliveries(qos)
    qos.append(DeliveredMessage("t1"), "t1")
    assert list(qos._delivered) == ["t1"]
    assert channel.redis.zsets[INDEX] == {}
    assert node.fetched == set()


def test_an_idle_channel_fetches_again_after_the_idle_time(fetching, clock) -> None:
    channel, _node, connection = fetching
    channel._brpop_start()
    connection.reply = None
    with pytest.raises(Empty):
        channel.handlers["BRPOP"]()
    channel._brpop_start()  # the event loop's next look, at once
    assert len(connection.sent) == 1
    assert channel._in_poll is None
    time.sleep(leases.FETCH_IDLE_SECONDS)
    channel._brpop_start()
    assert len(connection.sent) == 2


def test_a_queue_just_consumed_is_fetched_from_within_the_idle_time(fetching) -> None:
    """A worker is ready once its next fetch asks for every queue (the start canary): kombu's BRPOP under way asks for
    those of its start, for up to brpop_timeout."""
    channel, node, _connection = fetching
    assert node.next_round_seconds(channel) == leases.FETCH_IDLE_SECONDS
    blocking = FetchingChannel(FakeRedis())
    blocking.brpop_timeout = 1
    assert node.next_round_seconds(blocking) == 1
    assert node.next_round_seconds(SimpleNamespace()) == 0  # AMQP's


def test_a_fetch_after_the_servers_scripts_were_flushed_loads_it_again(fetching) -> None:
    channel, _node, connection = fetching
    channel._brpop_start()
    connection.reply = NoScriptError("NOSCRIPT No matching script.")
    with pytest.raises(Empty):
        channel.handlers["BRPOP"]()
    assert channel.client.loaded == 2
    channel._brpop_start()
    assert len(connection.sent) == 2


def test_a_broker_that_refuses_scripts_leaves_kombus_brpop(clock, caplog) -> None:
    channel = FetchingChannel(FakeRedis())

    def refuse(_script):
        raise ResponseError("NOPERM this user has no permissions to run the 'script|load' command")

    channel.client.script_load = refuse
    leases.Leases(40, clock=clock).fetch_atomically(channel)
    assert channel.handlers["BRPOP"] == channel._brpop_read
    assert "fetching with BRPOP" in caplog.text
