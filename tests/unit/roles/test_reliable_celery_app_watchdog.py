"""When the wrapper (roles/celery_base/files/reliable_celery_app.py) sends WATCHDOG=1, against a
stand-in for Celery's consumer and a datagram socket standing in for systemd's (conftest.py); molecule's
scenarios run it under systemd with real brokers."""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import kombu.pools
import pytest
from kombu import Connection

# The ping thread's interval is a quarter of this: it pings once, at import, within a test's span.
WATCHDOG_USEC = "4000000000"


class TaskConsumer:
    """kombu's consumer of the task queues: Celery's event loop starts consuming after the steps start."""

    def __init__(self, queues: list[str]) -> None:
        self.queues = [SimpleNamespace(name=name) for name in queues]
        self.consuming: set[str] = set()

    def consume(self) -> None:
        self.consuming = {queue.name for queue in self.queues}

    def consuming_from(self, queue: str) -> bool:
        return queue in self.consuming


class Consumer:
    """Celery's consumer as the watchdog step uses it: connection, task consumer, timer."""

    def __init__(self, queues: list[str]) -> None:
        self.connection = SimpleNamespace(connected=True)
        self.task_consumer = TaskConsumer(queues)
        self.timer = SimpleNamespace(call_repeatedly=self.call_repeatedly, call_after=self.call_after)
        self.tick = None
        self.first_tick = None
        self.connections_lost: list[Exception] = []

    def call_repeatedly(self, _seconds, function):
        self.tick = function
        return SimpleNamespace(cancel=lambda: None)

    def call_after(self, _seconds, function):
        self.first_tick = function
        return SimpleNamespace(cancel=lambda: None)

    def run_event_loop(self) -> None:
        """The event loop starts once every step has started: its first timer entry runs."""
        self.first_tick()

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        self.connections_lost.append(exc)


@pytest.fixture
def import_watched(notify, import_wrapper):
    """Import the wrapper under systemd's watchdog (more environment as keyword arguments), once its ping
    thread has sent its first ping (not consuming yet): a ping that came later would count as the step's."""

    def load(**environment):
        module = import_wrapper(WATCHDOG_USEC=WATCHDOG_USEC, WATCHDOG_PID=str(os.getpid()), **environment)
        deadline = time.monotonic() + 5
        while not notify() and time.monotonic() < deadline:
            time.sleep(0.01)
        return module

    return load


@pytest.fixture
def wrapper(import_watched):
    return import_watched()


def started(wrapper, notify, queues: list[str]) -> Consumer:
    """A consumer whose watchdog step started and which consumes, its first ping read."""
    consumer = Consumer(queues)
    consumer.step = wrapper._WatchdogStep(consumer)
    consumer.step.start(consumer)
    consumer.task_consumer.consume()
    consumer.run_event_loop()
    notify()
    return consumer


def test_it_pings_while_it_consumes_every_queue_with_its_connection_up(wrapper, notify) -> None:
    consumer = started(wrapper, notify, ["celery", "reports"])
    consumer.tick()
    assert notify() == [b"WATCHDOG=1"]


def test_a_cancelled_consumer_sends_no_ping(wrapper, notify) -> None:
    consumer = started(wrapper, notify, ["celery", "reports"])
    consumer.task_consumer.consuming.discard("reports")  # celery control cancel_consumer reports
    consumer.tick()
    assert notify() == []


def test_a_reconnect_without_a_cancelled_queue_still_sends_no_ping(wrapper, notify) -> None:
    """Celery deselects a cancelled queue: the consumer of a reconnect no longer has it."""
    consumer = started(wrapper, notify, ["celery", "reports"])
    consumer.step.stop(consumer)
    consumer.task_consumer = TaskConsumer(["celery"])
    consumer.step.start(consumer)
    assert notify() == [b"WATCHDOG=1"]  # connected again: the one ping of each start
    consumer.task_consumer.consume()
    consumer.tick()
    assert notify() == []


def test_a_lost_connection_sends_no_ping_from_the_event_loop(wrapper, notify) -> None:
    consumer = started(wrapper, notify, ["celery"])
    consumer.connection.connected = False
    consumer.tick()
    assert notify() == []


def test_at_a_connection_loss_the_worker_counts_as_not_consuming_at_once(wrapper, notify) -> None:
    """Celery cancels the running tasks before it stops the consumer's steps: the thread pings meanwhile."""
    consumer = started(wrapper, notify, ["celery"])
    assert wrapper._consuming.is_set()
    error = ConnectionResetError(104, "Connection reset by peer")
    consumer.on_connection_error_after_connected(error)
    assert not wrapper._consuming.is_set()
    assert consumer.connections_lost == [error]
    assert notify() == [b"WATCHDOG=1"]  # its event loop ran until it saw the loss


def test_each_start_pings_at_once(wrapper, notify) -> None:
    """A reconnect shorter than the thread's interval gets no ping from the thread."""
    consumer = Consumer(["celery"])
    wrapper._WatchdogStep(consumer).start(consumer)
    assert notify() == [b"WATCHDOG=1"]


def test_the_thread_pings_until_the_event_loop_runs(wrapper, notify) -> None:
    """A step that starts after the watchdog's may block (Celery's DelayedDelivery retried a dead cluster node's
    URL for 15 s and a 20 s watchdog fired): the worker counts as consuming once its event loop runs."""
    consumer = Consumer(["celery"])
    wrapper._WatchdogStep(consumer).start(consumer)
    assert not wrapper._consuming.is_set()
    consumer.run_event_loop()
    assert wrapper._consuming.is_set()


# --- The worker's canary: a frozen broker or a half-open connection looks connected ---


@pytest.fixture
def canary(import_wrapper, clock):
    return import_wrapper().Canary(2.5, clock=clock), clock


def test_a_canary_is_due_after_a_quiet_while(canary) -> None:
    canary, clock = canary
    assert not canary.due(room=True)  # a (re)start counts as a message just received
    clock.now += 2.4
    assert not canary.due(room=True)
    clock.now += 0.1
    assert canary.due(room=True)
    assert canary.due(room=False)  # a busy worker is judged too
    canary.sent("canary-1", through_tasks=True)
    assert not canary.due(room=True)  # one at a time
    canary.answered("canary-1")
    assert not canary.due(room=True)
    clock.now += 1
    canary.received()  # a task came: the consumer works
    clock.now += 2
    assert not canary.due(room=True)


def test_an_unanswered_canary_makes_the_worker_unhealthy_until_it_comes(canary) -> None:
    canary, clock = canary
    clock.now += 2.5
    canary.sent("canary-1", through_tasks=False)
    clock.now += 2.4
    assert canary.healthy()
    clock.now += 0.1
    assert not canary.healthy()
    canary.answered("canary-0")  # an earlier process's: no answer to this one
    assert not canary.healthy()
    canary.answered("canary-1")
    assert canary.healthy()


def test_a_canary_through_the_tasks_channel_goes_again_aside_once_the_worker_has_no_room(canary) -> None:
    """With its pool full, the worker's task channel takes nothing more: the first canary may wait behind the
    tasks, and one aside comes back at once; a worker held up longer than the canary's wait is not healthy."""
    canary, clock = canary
    clock.now += 2.5
    canary.sent("canary-1", through_tasks=True)
    assert not canary.due(room=True)
    clock.now += 1
    assert canary.due(room=False)
    canary.sent("canary-2", through_tasks=False)
    assert not canary.due(room=False)
    assert not canary.due(room=True)  # the channel aside has no prefetch limit: that one comes whatever the room
    clock.now += 1.5
    assert not canary.healthy()  # counted from the first
    canary.answered("canary-1")  # late, and no longer the one out
    assert not canary.healthy()
    canary.answered("canary-2")
    assert canary.healthy()


def test_a_consumer_restart_forgets_the_outstanding_canary(canary) -> None:
    """Sent through a connection lost since (a broker restart): the new consumer is judged afresh."""
    canary, clock = canary
    clock.now += 2.5
    canary.sent("canary-1", through_tasks=True)
    clock.now += 10
    canary.restart()
    assert canary.healthy()
    assert not canary.due(room=True)


class Message:
    def __init__(self, canary_id: str) -> None:
        self.headers = {"id": canary_id, "task": "reliable_celery.canary"}
        self.acked = False

    def ack_log_error(self, _logger, _errors) -> None:
        self.acked = True


@pytest.fixture
def canary_worker(notify, import_watched, tmp_path, clock, monkeypatch):
    """A worker under the watchdog with worker_direct, its watchdog and canary steps started; the test sends."""
    settings = tmp_path / "settings.json"
    settings.write_text('{"worker_direct": true}')
    wrapper = import_watched(RELIABLE_CELERY_SETTINGS=str(settings))
    wrapper._canary.clock, wrapper._canary.seconds = clock, 2.5
    monkeypatch.setattr(wrapper._WorkerCanary, "send_when_due", lambda _self, _c: None)
    broker = Connection("memory://")
    consumer = Consumer(["celery", "w1@host.dq2"])
    consumer.hostname, consumer.strategies, consumer.qos = "w1@host", {}, SimpleNamespace(value=3)
    consumer.connection.channel, consumer.broker = broker.channel, broker
    consumer.step = wrapper._WatchdogStep(consumer)
    consumer.step.start(consumer)
    consumer.canary_step = wrapper._CanaryStep(consumer)
    consumer.canary_step.start(consumer)
    consumer.task_consumer.consume()
    return wrapper, consumer


def test_the_event_loop_pings_only_while_its_canary_comes_back(canary_worker, notify, clock) -> None:
    wrapper, consumer = canary_worker
    assert "_CanaryStep" in {getattr(s, "__name__", s) for s in wrapper.app.steps["consumer"]}
    assert wrapper._canary.queue.name == "w1@host.dq2"
    clock.now += 2.5
    assert wrapper._canary.due(wrapper._has_room(consumer))
    wrapper._canary.sent("canary-1", through_tasks=True)
    clock.now += 2.5
    notify()
    consumer.tick()
    assert notify() == []
    message = Message("canary-1")
    consumer.strategies["reliable_celery.canary"](message, None, None, None, None)
    assert message.acked
    consumer.tick()
    assert notify() == [b"WATCHDOG=1"]


def test_a_busy_workers_canary_comes_back_without_acks_on_a_channel_of_its_own(canary_worker) -> None:
    """A worker whose pool is full holds as many unacked tasks as its prefetch allows: a channel without a prefetch
    limit still receives the canary (on Redis too: kombu fetches for each channel by its own prefetch)."""
    wrapper, consumer = canary_worker
    [taker] = consumer.canary_step.consumers
    assert taker.no_ack is True
    assert taker.channel is not None
    queue = wrapper._canary.queue_aside
    assert [q.name for q in taker.queues] == ["w1@host.dq2.canary"]
    assert (queue.routing_key, queue.exchange.name) == ("w1@host.dq2.canary", "")
    wrapper._canary.sent("canary-1", through_tasks=False)
    taker.channel.basic_publish(taker.channel.prepare_message("{}", headers={"id": "canary-1"}), "", queue.name)
    consumer.broker.drain_events(timeout=1)
    assert wrapper._canary.outstanding is None


def test_a_stop_drops_the_canary_channels_waiting_fetch_instead_of_reading_it(canary_worker) -> None:
    """kombu's Redis channel reads the reply of its BRPOP before it closes, up to brpop_timeout into every stop."""
    _wrapper, consumer = canary_worker
    [taker] = consumer.canary_step.consumers
    waiting = SimpleNamespace(disconnected=False)
    waiting.disconnect = lambda: setattr(waiting, "disconnected", True)
    taker.channel._in_poll = waiting
    consumer.canary_step.stop(consumer)
    assert waiting.disconnected
    assert taker.channel._in_poll is None


def test_in_a_cluster_the_canary_queue_aside_is_a_quorum_queue_like_the_nodes_own(import_wrapper) -> None:
    wrapper = import_wrapper()
    direct = wrapper.worker_direct("w1@host")
    direct.queue_arguments = {"x-queue-type": "quorum"}
    wrapper.app.amqp.queues[direct.name] = direct
    queue = wrapper._canary_queue("w1@host")
    assert queue.queue_arguments == {"x-queue-type": "quorum"}
    assert queue.durable


def test_without_worker_direct_there_is_no_canary(wrapper) -> None:
    assert wrapper._canary is None
    assert "_CanaryStep" not in {getattr(s, "__name__", s) for s in wrapper.app.steps["consumer"]}


def test_a_send_that_raised_is_tried_again_at_once_its_wait_counted_from_the_first_try(canary) -> None:
    """The pool's connection may be one a broker restart broke, while the consumer has reconnected: a failed
    send is no reason to abort a working worker, and a send that keeps failing is no reason to trust it."""
    canary, clock = canary
    clock.now += 2.5
    canary.sent("canary-1", through_tasks=True)
    canary.failed("canary-1")
    assert canary.due(room=True)
    canary.answered(None)  # a message without an id answers nothing
    assert canary.due(room=True)
    clock.now += 1
    canary.sent("canary-2", through_tasks=True)
    assert not canary.due(room=True)
    canary.answered("canary-2")
    clock.now += 2
    assert canary.healthy()
    canary.sent("canary-3", through_tasks=True)
    canary.failed("canary-3")
    clock.now += 2.5
    canary.sent("canary-4", through_tasks=True)
    assert not canary.healthy()


def test_the_worker_canary_retries_a_send_that_raised_through_the_queue_its_room_chooses(
    canary_worker, clock, monkeypatch
) -> None:
    wrapper, _consumer = canary_worker
    sends = []

    def send_task(name, task_id, queue, retry, retry_policy):
        sends.append((task_id, queue.name, retry, retry_policy["max_retries"]))
        if len(sends) == 1:
            raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(wrapper.app, "send_task", send_task)
    clock.now += 2.5
    wrapper._canary.send(through_tasks=True)
    assert wrapper._canary.due(room=True)
    wrapper._canary.send(through_tasks=False)
    assert not wrapper._canary.due(room=False)
    assert [send[1:] for send in sends] == [("w1@host.dq2", True, 1), ("w1@host.dq2.canary", True, 1)]
    wrapper._canary.answered(sends[1][0])
    assert wrapper._canary.healthy()


CLUSTER = "amqp://u:p@rc-n1:5672/celery;amqp://u:p@rc-n2:5672/celery;amqp://u:p@rc-n3/celery"


def test_only_several_amqp_urls_are_a_cluster(import_wrapper) -> None:
    wrapper = import_wrapper()
    assert wrapper.cluster_urls(CLUSTER) == CLUSTER.split(";")
    assert wrapper.cluster_urls(CLUSTER.split(";")) == CLUSTER.split(";")
    assert wrapper.cluster_urls("amqp://u:p@rc-n1/celery") == []
    assert wrapper.cluster_urls("redis://:p@rc-r1:6379/0;redis://:p@rc-r2:6379/0") == []


def test_the_silent_node_goes_last_whatever_its_url_spells_of_the_port(import_wrapper) -> None:
    wrapper = import_wrapper()
    urls = CLUSTER.split(";")
    assert wrapper.silent_node_last(urls, "amqp://u:p@rc-n1:5672/celery") == [urls[1], urls[2], urls[0]]
    assert wrapper.silent_node_last(urls, "amqp://u:p@rc-n3:5672/celery") == urls


class ProbedConnection:
    """A new connection of the node probe: one that answers, or one whose handshake times out."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.ended: list[str] = []

    def ensure_connection(self, max_retries):
        assert max_retries == 0
        if not self.answers:
            raise TimeoutError("timed out")
        return self

    def as_uri(self):
        return "amqp://u:**@rc-n1:5672/celery"

    def collect(self):
        self.ended.append("collect")

    def release(self):
        self.ended.append("release")


def node_connection(url: str):
    """A kombu connection (never connected) that records whether it was collected."""
    connection = Connection(url)
    connection.ended = []
    connection.collect = lambda: connection.ended.append("collect")
    return connection


@pytest.fixture
def cluster_worker(import_watched, tmp_path, clock, monkeypatch):
    """A worker of a three-node cluster whose canary has waited NODE_PROBE_SECONDS for an answer, and the node
    probe's connection (answers: False unless set)."""
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"worker_direct": True, "broker_url": CLUSTER}))
    wrapper = import_watched(RELIABLE_CELERY_SETTINGS=str(settings))
    wrapper._canary.clock, wrapper._canary.seconds = clock, 2.5
    probed = ProbedConnection(answers=False)
    monkeypatch.setattr(wrapper.app, "connection_for_read", lambda url, connect_timeout: probed)
    consumer = Consumer(["celery"])
    consumer.connection.as_uri = lambda include_password=False: CLUSTER.split(";", maxsplit=1)[0]
    # Celery's events, through the same node (its worker heartbeats would block on it), and the app's pool with a
    # connection to each of two nodes.
    consumer.event_dispatcher = SimpleNamespace(connection=node_connection(CLUSTER.split(";", maxsplit=1)[0]))
    # Celery's app.pool is the pool kombu keeps for the app's URLs.
    pooled = [node_connection(url) for url in CLUSTER.split(";")[:2]]
    pool = SimpleNamespace(_resource=SimpleNamespace(queue=[pooled[1]]), _dirty={pooled[0]})
    monkeypatch.setattr(kombu.pools, "connections", kombu.pools.Connections(limit=10))
    monkeypatch.setattr(kombu.pools, "producers", kombu.pools.Producers(limit=10))
    kombu.pools.connections[Connection(CLUSTER)] = pool
    monkeypatch.setattr(wrapper.app, "_pool", pool)
    step = wrapper._SilentNodeStep(consumer)
    step.start(consumer)
    wrapper._canary.restart()
    wrapper._canary.sent("canary-1", through_tasks=True)
    clock.now += wrapper.NODE_PROBE_SECONDS
    consumer.pooled = pooled
    return wrapper, consumer, step, probed


def test_a_node_that_answers_no_new_connection_while_the_canary_waits_is_left_for_the_others(cluster_worker) -> None:
    wrapper, consumer, step, probed = cluster_worker
    assert "_SilentNodeStep" in {getattr(s, "__name__", s) for s in wrapper.app.steps["consumer"]}
    step.watch_once()  # what the watching thread does every CANARY_LOOK_SECONDS while the worker consumes
    assert probed.ended == ["collect"]
    urls = CLUSTER.split(";")
    assert (
        wrapper.app.conf.broker_read_url == wrapper.app.conf.broker_write_url == ";".join([urls[1], urls[2], urls[0]])
    )
    assert consumer.event_dispatcher.connection.ended == ["collect"]
    assert [connection.ended for connection in consumer.pooled] == [["collect"], []]
    assert wrapper.app._pool is None  # publishes go through a new pool, of the URLs in their new order
    with pytest.raises(ConnectionError, match="consuming through another node"):
        consumer.tick()


def test_leaving_a_node_forgets_kombus_pools_as_they_are_kept_by_their_first_url(cluster_worker) -> None:
    """A pool kombu kept for an order of the URLs that starts with the same node as a later one would come back,
    with its connections to wherever they failed over: the ones to the silent node are dropped, the pools forgotten."""
    _wrapper, _consumer, step, _probed = cluster_worker
    urls = CLUSTER.split(";")
    kept = [node_connection(urls[0]), node_connection(urls[2])]
    kombu.pools.connections[Connection(";".join([urls[1], urls[2], urls[0]]))] = SimpleNamespace(
        _resource=SimpleNamespace(queue=[kept[1]]), _dirty={kept[0]}
    )
    step.watch_once()
    assert [connection.ended for connection in kept] == [["collect"], []]
    assert len(kombu.pools.connections) == 0
    assert len(kombu.pools.producers) == 0


def test_a_live_node_keeps_the_connection_while_its_queue_waits_for_the_cluster(cluster_worker) -> None:
    wrapper, consumer, step, probed = cluster_worker
    probed.answers = True
    step.watch_once()
    assert probed.ended == ["release"]
    consumer.tick()  # no error: the connection and its running tasks stay
    assert consumer.event_dispatcher.connection.ended == []
    assert wrapper.app._pool is not None


def test_a_canary_that_comes_back_probes_nothing(cluster_worker) -> None:
    wrapper, consumer, step, probed = cluster_worker
    wrapper._canary.answered("canary-1")
    step.watch_once()
    assert probed.ended == []
    consumer.tick()


def test_a_canary_late_by_less_than_the_probe_time_probes_nothing(cluster_worker, clock) -> None:
    wrapper, consumer, step, probed = cluster_worker
    clock.now -= wrapper.NODE_PROBE_SECONDS / 2
    step.watch_once()
    assert probed.ended == []
    consumer.tick()


def test_a_probe_that_ends_after_a_reconnect_leaves_the_new_node_alone(cluster_worker) -> None:
    _wrapper, consumer, step, _probed = cluster_worker
    consumer.connection.as_uri = lambda include_password=False: CLUSTER.split(";")[1]
    step.start(consumer)  # the consumer reconnected through rc-n2 while a probe of rc-n1 ran
    step.leave(consumer, CLUSTER.split(";", maxsplit=1)[0])
    consumer.tick()


def test_a_single_broker_has_no_node_step(wrapper) -> None:
    assert "_SilentNodeStep" not in {getattr(s, "__name__", s) for s in wrapper.app.steps["consumer"]}
