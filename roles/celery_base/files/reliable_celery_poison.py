"""Poison containment and the dead-letter queue, installed by reliable.celery beside the wrapper.

With late acks and ``task_reject_on_worker_lost``, a task whose run ends without an ack (its pool
process or its whole worker died, or its host) comes back to its queue and runs again: a task
that kills its pool process or its worker would run forever (Celery #9082), a worker killed each
time. Neither broker can count such runs for us: RabbitMQ's quorum-queue delivery limit counts
every return, including those of ETA messages a worker hands back at each restart, and classic
queues and Redis count nothing. So the count travels in the message:

- a message that comes back (``delivery_info['redelivered']``: RabbitMQ sets it on every return,
  kombu's Redis transport on every restore) may have run, unless its ETA is still ahead (a worker
  only holds such a message). Its unfinished runs are its header ``reliable_celery_unfinished_runs``
  plus the one it comes back from;
- below the limit, the message goes back with the new count. On Redis, in one transaction, the
  worker takes it out of its unacked messages and puts it back at the head of its queue, as kombu's
  own restore does but counted: it keeps its place (behind a backlog a killed worker's task would
  otherwise start again only after the whole queue) and no death between two steps leaves two
  copies. On RabbitMQ, which has no head to put it back to, the worker publishes a copy to where
  the message was sent, then acks the message: the copy runs at the end of its queue, and a worker
  that dies between the publish and the ack leaves both, so the task may run once more;
- at the limit, the worker publishes it to the dead-letter queue instead, marks the task FAILURE
  (``WorkerLostError``) in the result backend and acks it. ``python -m reliable_celery_poison list``
  shows the dead letters, ``replay`` sends them back with their count reset.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime, timezone

from billiard.exceptions import WorkerLostError
from celery.worker.request import Request
from kombu import Queue
from kombu.utils.json import dumps, loads
from kombu.utils.uuid import uuid

logger = logging.getLogger("reliable_celery.poison")

RUNS_HEADER = "reliable_celery_unfinished_runs"
# [exchange, routing_key] a dead letter was sent to, and when and where it was dead-lettered.
ORIGIN_HEADER = "reliable_celery_origin"
DEAD_LETTERED_HEADER = "reliable_celery_dead_lettered"
# Properties a copy keeps: the rpc:// backend replies to reply_to with the correlation_id.
COPIED_PROPERTIES = ("correlation_id", "reply_to", "priority", "delivery_mode")
# Headers a copy drops: kombu's Redis transport marks restored messages with `redelivered`.
DROPPED_HEADERS = ("redelivered",)
# kombu's Redis channel internals that put a message back counted, at the head of its queue.
REDIS_INTERNALS = ("unacked_key", "unacked_index_key", "_lookup", "_q_for_pri", "_get_message_priority")


def unfinished_runs(message, now: datetime) -> int | None:
    """How many runs of the message's task ended unfinished, counting the delivery it comes back
    from; None when it is not coming back or cannot have run (its ETA is still ahead)."""
    if not (message.delivery_info or {}).get("redelivered"):
        return None
    headers = message.headers or {}
    eta = headers.get("eta")
    if eta:
        eta_time = datetime.fromisoformat(eta)
        if eta_time.tzinfo is None:
            eta_time = eta_time.replace(tzinfo=timezone.utc)
        if eta_time > now:
            return None
    return int(headers.get(RUNS_HEADER) or 0) + 1


def _copy(message, headers_update: dict, drop=()) -> dict:
    """The arguments that publish the message again, as it was sent, with its headers updated."""
    headers = {key: value for key, value in (message.headers or {}).items() if key not in DROPPED_HEADERS + drop}
    headers.update(headers_update)
    properties = message.properties or {}
    return {
        "body": message.body,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": headers,
        **{name: properties[name] for name in COPIED_PROPERTIES if properties.get(name) is not None},
    }


def _redis_channel(message):
    """The message's channel when it is kombu's Redis channel with the internals put_back_counted uses.
    kombu's Redis transport is loaded once a worker uses it, and cannot be without Redis's extras."""
    redis_transport = sys.modules.get("kombu.transport.redis")
    channel = message.channel
    if redis_transport is None or not isinstance(channel, redis_transport.Channel):
        return None
    return channel if all(hasattr(channel, name) for name in REDIS_INTERNALS) else None


def put_back_counted(channel, tag: str, runs: int) -> None:
    """Redis: in one transaction, the message of TAG leaves the unacked messages and goes back to
    the head of its queue (kombu publishes with LPUSH and consumes with BRPOP: RPUSH) with RUNS
    unfinished runs counted and no mark of a return, so that its next delivery is a first one.
    It gets a new delivery tag, as a publish gives: another worker can take it before this one's
    ack, whose removal from the unacked messages would otherwise remove that worker's entry."""

    def transaction(pipe):
        payload = pipe.hget(channel.unacked_key, tag)
        pipe.multi()
        pipe.zrem(channel.unacked_index_key, tag)
        pipe.hdel(channel.unacked_key, tag)
        if payload:  # else a sweep put it back meanwhile, and it counts there
            message, exchange, routing_key = loads(payload)
            message["headers"][RUNS_HEADER] = runs
            message["properties"]["delivery_tag"] = uuid()
            for marks in (message["headers"], message["properties"].get("delivery_info", {})):
                marks.pop("redelivered", None)
            priority = channel._get_message_priority(message, reverse=False)
            for queue in channel._lookup(exchange, routing_key):
                pipe.rpush(channel._q_for_pri(queue, priority), dumps(message))

    with channel.conn_or_acquire() as client:
        client.transaction(transaction, channel.unacked_key)


def dead_letter_queue(app, name: str) -> Queue:
    """The dead-letter queue: durable, on the default exchange (on Redis a list of that name); a quorum queue
    when the app's queues are (a RabbitMQ cluster: a classic queue would live on one node only)."""
    quorum = app.conf.task_default_queue_type == "quorum"
    arguments = {"x-queue-type": "quorum"} if quorum else None
    return Queue(name, routing_key=name, durable=True, auto_delete=False, queue_arguments=arguments)


class Containment:
    """Counts a returning message's unfinished runs; past the limit, dead-letters it."""

    def __init__(self, app, max_unfinished_runs: int, dead_letter_queue_name: str, clock=time.time) -> None:
        self.app = app
        self.max_unfinished_runs = int(max_unfinished_runs)
        self.queue = dead_letter_queue(app, dead_letter_queue_name)
        self.clock = clock
        self.node = None  # the worker's node name, known once its consumer exists
        # Celery's own for task messages: a few short retries, not kombu's default of forever,
        # which would stall the event loop this runs on.
        self._retry = {"retry": True, "retry_policy": app.conf.task_publish_retry_policy}

    def take(self, message) -> bool:
        """Put the message back with its count (on RabbitMQ: publish it again and ack it), or
        dead-letter it: True. False when the message is the worker's to run."""
        runs = unfinished_runs(message, datetime.fromtimestamp(self.clock(), timezone.utc))
        if runs is None:
            return False
        headers = message.headers or {}
        task_id, task_name = headers.get("id"), headers.get("task")
        delivery = message.delivery_info or {}
        origin = [delivery.get("exchange") or "", delivery.get("routing_key") or ""]
        redis_channel = _redis_channel(message)
        if runs < self.max_unfinished_runs and redis_channel is not None:
            put_back_counted(redis_channel, message.delivery_tag, runs)
            logger.warning("task %s[%s] ended unfinished %d time(s): put back", task_name, task_id, runs)
            message.ack()  # kombu's own state: its Redis commands find nothing left to remove
            return True
        with self.app.producer_or_acquire() as producer:
            if runs < self.max_unfinished_runs:
                copy = _copy(message, {RUNS_HEADER: runs})
                producer.publish(exchange=origin[0], routing_key=origin[1], **self._retry, **copy)
                logger.warning("task %s[%s] ended unfinished %d time(s): sent again", task_name, task_id, runs)
            else:
                dead = {"at": self.clock(), "node": self.node}
                arguments = _copy(message, {RUNS_HEADER: runs, ORIGIN_HEADER: origin, DEAD_LETTERED_HEADER: dead})
                producer.publish(
                    exchange="",
                    routing_key=self.queue.name,
                    declare=[self.queue],
                    **self._retry,
                    **arguments,
                )
                logger.error(
                    "task %s[%s] ended unfinished %d time(s), its pool process or worker lost each time: "
                    "not run again, moved to the dead-letter queue %s",
                    task_name,
                    task_id,
                    runs,
                    self.queue.name,
                )
                self._mark_failure(message, runs)
        message.ack()
        return True

    def _mark_failure(self, message, runs: int) -> None:
        task = self.app.tasks.get((message.headers or {}).get("task"))
        if task is None:
            return
        request = Request(message, app=self.app, task=task, body=message.body, headers=message.headers, decoded=False)
        error = WorkerLostError(
            f"ended unfinished {runs} time(s) (its pool process or worker was lost each time): "
            f"not run again, in the dead-letter queue {self.queue.name}"
        )
        task.backend.mark_as_failure(request.id, error, request=request._context, store_result=request.store_errors)


def _dead_letters(channel, queue: Queue):
    """Every message of the dead-letter queue, held until it is acked or put back."""
    bound = queue(channel)
    bound.declare()
    messages = []
    while (message := bound.get(no_ack=False)) is not None:
        messages.append(message)
    return messages


def _put_back(messages) -> None:
    """Back in the dead-letter queue, in their order (each to its end)."""
    for message in messages:
        if not message.acknowledged:
            message.reject(requeue=True)


def describe(message) -> dict:
    headers = message.headers or {}
    dead = headers.get(DEAD_LETTERED_HEADER) or {}
    return {
        "id": headers.get("id"),
        "task": headers.get("task"),
        "unfinished_runs": headers.get(RUNS_HEADER),
        "origin": headers.get(ORIGIN_HEADER),
        "dead_lettered_at": dead.get("at"),
        "node": dead.get("node"),
    }


def list_dead_letters(app, queue_name: str) -> list[dict]:
    with app.connection_for_write() as connection:
        messages = _dead_letters(connection.default_channel, dead_letter_queue(app, queue_name))
        _put_back(messages)
        return [describe(message) for message in messages]


def replay(app, queue_name: str, task_ids: set[str] | None) -> list[dict]:
    """Send the dead letters of these task ids (all when None) back where they were first sent,
    with no unfinished run counted; the others stay. Returns those sent back."""
    replayed = []
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        producer = connection.Producer()
        messages = _dead_letters(channel, dead_letter_queue(app, queue_name))
        for message in messages:
            described = describe(message)
            if task_ids is not None and described["id"] not in task_ids:
                continue
            exchange, routing_key = (message.headers or {}).get(ORIGIN_HEADER) or ["", ""]
            producer.publish(
                exchange=exchange,
                routing_key=routing_key,
                retry=True,
                retry_policy=app.conf.task_publish_retry_policy,
                **_copy(message, {}, drop=(RUNS_HEADER, ORIGIN_HEADER, DEAD_LETTERED_HEADER)),
            )
            message.ack()
            replayed.append(described)
        _put_back(messages)
    return replayed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reliable_celery_poison",
        description="The dead-letter queue of the workers' poison containment (run with a worker's environment).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print each dead letter as a line of JSON")
    replay_parser = commands.add_parser("replay", help="send dead letters back to their queue, their count reset")
    replay_parser.add_argument("task_ids", nargs="*", metavar="TASK_ID", help="the task ids to send back")
    replay_parser.add_argument("--all", action="store_true", help="every dead letter")
    arguments = parser.parse_args(argv)
    if arguments.command == "replay" and arguments.all == bool(arguments.task_ids):
        replay_parser.error("name the TASK_IDs to send back, or --all")

    # The worker's app, settings and credentials; it imports this module, so not at the top.
    import reliable_celery_app  # noqa: PLC0415

    settings = reliable_celery_app.POISON
    if settings is None:
        parser.error("poison containment is off for this worker (celery_worker_max_unfinished_runs: 0)")
    queue_name = settings["dead_letter_queue"]
    if arguments.command == "list":
        letters = list_dead_letters(reliable_celery_app.app, queue_name)
    else:
        wanted = None if arguments.all else set(arguments.task_ids)
        letters = replay(reliable_celery_app.app, queue_name, wanted)
    for letter in letters:
        print(json.dumps(letter, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
