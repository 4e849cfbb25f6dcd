"""Poison containment (roles/celery_base/files/reliable_celery_poison.py) with a real Celery app on
kombu's in-memory transport; molecule's chaos scenarios run it on both brokers."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from celery import Celery
from fake_redis import INDEX, UNACKED, FakeRedis, RedisChannel
from kombu import Queue
from kombu.transport import redis as redis_transport
from kombu.utils.json import dumps, loads

sys.path.insert(0, str(Path(__file__).parents[3] / "roles" / "celery_base" / "files"))
import reliable_celery_poison as poison

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
DEAD = "reliable-celery.dead-letter"


@pytest.fixture(scope="module")
def app():
    app = Celery("poison-test", broker="memory://", backend="cache+memory://", set_as_current=False)

    @app.task(name="example.crash")
    def crash():
        return None

    return app


@pytest.fixture(autouse=True)
def empty_queues(app):
    """The memory transport's queues live as long as the process: empty those a test used."""
    yield
    with app.connection_for_write() as connection:
        for name in ("celery", DEAD):
            Queue(name, routing_key=name)(connection.default_channel).declare()
            connection.default_channel.queue_purge(name)


def send(app, eta=None, **options):
    return app.send_task("example.crash", eta=eta, **options)


def receive(app, queue="celery"):
    """The next message of the queue, as a worker holds it (unacked)."""
    connection = app.connection_for_write()
    bound = Queue(queue, routing_key=queue)(connection.default_channel)
    bound.declare()
    message = bound.get(no_ack=False)
    assert message is not None, f"no message in {queue}"
    return message


def returned(message):
    """The message as the broker hands it back after its holder died."""
    message.delivery_info["redelivered"] = True
    return message


def test_a_first_delivery_or_a_returned_message_whose_eta_is_ahead_is_not_counted(app):
    send(app)
    assert poison.unfinished_runs(receive(app), NOW) is None

    send(app, eta=datetime.now(timezone.utc) + timedelta(hours=1))
    assert poison.unfinished_runs(returned(receive(app)), datetime.now(timezone.utc)) is None


def test_a_returned_message_counts_the_run_it_comes_back_from(app):
    send(app, eta=datetime.now(timezone.utc) - timedelta(seconds=1))
    message = returned(receive(app))
    assert poison.unfinished_runs(message, datetime.now(timezone.utc)) == 1
    message.headers[poison.RUNS_HEADER] = 2
    assert poison.unfinished_runs(message, datetime.now(timezone.utc)) == 3


def test_below_the_limit_a_copy_with_the_count_is_sent_where_the_message_went_and_the_message_acked(app):
    result = send(app, headers={"trace": "kept"})
    containment = poison.Containment(app, 3, DEAD)
    message = returned(receive(app))
    message.headers["redelivered"] = True  # as kombu's Redis transport marks a restored message
    assert containment.take(message) is True
    assert message.acknowledged

    copy = receive(app)
    assert copy.headers["id"] == result.id
    assert copy.headers[poison.RUNS_HEADER] == 1
    assert copy.headers["trace"] == "kept"
    assert "redelivered" not in copy.headers
    assert copy.body == message.body
    assert copy.properties["correlation_id"] == result.id
    assert not copy.delivery_info.get("redelivered")
    assert containment.take(copy) is False  # a fresh copy is the worker's to run


def test_at_the_limit_the_task_ends_failure_in_the_dead_letter_queue_and_replays(app, capsys):
    result = send(app)
    containment = poison.Containment(app, 3, DEAD, clock=lambda: 1234.5)
    containment.node = "default@host"
    message = returned(receive(app))
    message.headers[poison.RUNS_HEADER] = 2
    assert containment.take(message) is True
    assert message.acknowledged
    assert result.state == "FAILURE"
    assert "ended unfinished 3 time(s)" in str(result.result)

    letters = poison.list_dead_letters(app, DEAD)
    assert letters == [
        {
            "id": result.id,
            "task": "example.crash",
            "unfinished_runs": 3,
            "origin": ["", "celery"],
            "dead_lettered_at": 1234.5,
            "node": "default@host",
        }
    ]
    assert poison.list_dead_letters(app, DEAD) == letters  # listing leaves them there

    other = send(app)
    other_message = returned(receive(app))
    other_message.headers[poison.RUNS_HEADER] = 5
    containment.take(other_message)
    assert [letter["id"] for letter in poison.replay(app, DEAD, {result.id})] == [result.id]
    assert [letter["id"] for letter in poison.list_dead_letters(app, DEAD)] == [other.id]

    replayed = receive(app)
    assert replayed.headers["id"] == result.id
    assert not {poison.RUNS_HEADER, poison.ORIGIN_HEADER, poison.DEAD_LETTERED_HEADER} & set(replayed.headers)
    assert containment.take(replayed) is False


def test_a_message_published_to_a_named_exchange_goes_back_to_it(app):
    send(app, exchange="celery", routing_key="celery")
    message = returned(receive(app))
    assert message.delivery_info["exchange"] == "celery"
    poison.Containment(app, 3, DEAD).take(message)
    assert receive(app).headers[poison.RUNS_HEADER] == 1


def test_replay_needs_task_ids_or_all():
    with pytest.raises(SystemExit):
        poison.main(["replay"])
    with pytest.raises(SystemExit):
        poison.main(["replay", "--all", "an-id"])


class HeldMessage:
    """A task message a worker holds on Redis, in the unacked hash as kombu's QoS wrote it."""

    def __init__(self, channel: RedisChannel, payload: dict) -> None:
        self.channel, self.payload, self.acknowledged = channel, payload, False
        self.delivery_tag = payload["properties"]["delivery_tag"]
        self.headers, self.delivery_info = payload["headers"], payload["properties"]["delivery_info"]
        channel.redis.hashes[UNACKED][self.delivery_tag] = dumps([payload, "", "celery"])
        channel.redis.zsets[INDEX][self.delivery_tag] = 1.0

    def ack(self) -> None:
        """kombu's Redis ack: the tag leaves the unacked messages."""
        self.channel.redis.zrem(INDEX, self.delivery_tag)
        self.channel.redis.hdel(UNACKED, self.delivery_tag)
        self.acknowledged = True


def restored_payload(tag: str, priority: int = 0) -> dict:
    """A task message as kombu's Redis transport puts it back after its holder died."""
    return {
        "body": "W10=",
        "content-type": "application/json",
        "headers": {"id": f"id-{tag}", "task": "example.crash", "eta": None, "redelivered": True},
        "properties": {
            "delivery_tag": tag,
            "priority": priority,
            "delivery_info": {"exchange": "", "routing_key": "celery", "redelivered": True},
        },
    }


def test_on_redis_a_returned_message_goes_back_counted_to_the_head_of_its_queue(app):
    redis = FakeRedis()
    channel = RedisChannel(redis)
    redis.lists["celery"] = ["backlog-2", "backlog-1"]  # BRPOP takes the last first
    message = HeldMessage(channel, restored_payload("t1"))
    assert poison.Containment(app, 3, DEAD).take(message) is True
    assert message.acknowledged
    assert redis.hashes[UNACKED] == {}
    assert redis.zsets[INDEX] == {}
    assert redis.lists["celery"][:2] == ["backlog-2", "backlog-1"]
    [put_back] = [loads(payload) for payload in redis.lists["celery"][2:]]
    assert put_back["headers"][poison.RUNS_HEADER] == 1
    assert "redelivered" not in put_back["headers"]
    assert "redelivered" not in put_back["properties"]["delivery_info"]
    assert put_back["body"] == message.payload["body"]

    # Its next delivery is a first one; a return after it counts the run it comes back from too.
    again = HeldMessage(channel, put_back)
    assert poison.unfinished_runs(again, NOW) is None
    again.delivery_info["redelivered"] = True
    assert poison.unfinished_runs(again, NOW) == 2


def test_on_redis_a_worker_that_takes_the_message_back_before_the_ack_keeps_holding_it(app):
    redis = FakeRedis()
    channel = RedisChannel(redis)
    message = HeldMessage(channel, restored_payload("t1"))
    taken = []
    kombu_ack = message.ack

    def ack_after_another_worker_took_it():
        taken.append(HeldMessage(channel, loads(redis.lists["celery"].pop())))
        kombu_ack()

    message.ack = ack_after_another_worker_took_it
    poison.Containment(app, 3, DEAD).take(message)
    [other] = taken
    assert other.delivery_tag != message.delivery_tag
    assert other.delivery_tag in redis.hashes[UNACKED]
    assert other.delivery_tag in redis.zsets[INDEX]


def test_on_redis_a_message_goes_back_to_the_list_of_its_priority(app):
    redis = FakeRedis()
    channel = RedisChannel(redis)
    poison.Containment(app, 3, DEAD).take(HeldMessage(channel, restored_payload("t1", priority=5)))
    # kombu's priority steps are 0, 3, 6, 9: priority 5 waits in the list of step 3.
    assert list(redis.lists) == [f"celery{redis_transport.Channel.sep}3"]


def test_the_module_loads_without_kombus_redis_transport():
    """A RabbitMQ worker's release has no Redis extras: kombu's Redis transport cannot be imported there."""
    files = Path(poison.__file__).parent
    code = (
        "import sys; sys.modules['kombu.transport.redis'] = None; "
        f"sys.path.insert(0, {str(files)!r}); import reliable_celery_poison"
    )
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_with_quorum_queues_the_dead_letter_queue_is_one_too() -> None:
    """On a RabbitMQ cluster a classic queue lives on one node: its loss would take the dead letters with it."""
    quorum = Celery("poison-quorum", broker="memory://", set_as_current=False)
    quorum.conf.task_default_queue_type = "quorum"
    assert poison.dead_letter_queue(quorum, DEAD).queue_arguments == {"x-queue-type": "quorum"}
    assert not poison.dead_letter_queue(Celery("poison-classic", set_as_current=False), DEAD).queue_arguments
