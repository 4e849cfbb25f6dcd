"""Celery app wrapper installed by the reliable.celery collection into every release.

The units run ``celery -A reliable_celery_app worker|beat|flower``. This module:

- imports the app object named by ``RELIABLE_CELERY_APP`` (``package.module:attribute``), or
  makes a bare Celery app when there is none (Flower needs no app code);
- applies the settings in the JSON file named by ``RELIABLE_CELERY_SETTINGS`` with
  ``app.conf.update``, which wins over ``config_from_object`` (the Django pattern) and over
  what the app set itself; ``celery --config`` would be silently ignored in that case;
- sets ``broker_url`` and ``result_backend`` from the systemd credentials of the same names
  (``$CREDENTIALS_DIRECTORY``, ``LoadCredential=``): the passwords in them never enter the
  environment, which every process a task starts would inherit; for a Redis Sentinel URL
  (``sentinel://...;sentinel://...``), gives the sentinels the URL's login with socket timeouts
  (``sentinel_kwargs``, ``sentinel_logins``);
- writes ``$RUNTIME_DIRECTORY/start.json`` (its command line and the settings of the file) when it
  starts, from which celery_worker_restart can start this generation again if its successor
  cannot start (plugins/module_utils/_rollback.py);
- on Redis, when the settings ask for it (``reliable_celery_leases``), fetches each message and
  records it as held in one step, renews the visibility lease of every message the worker holds,
  at start, puts back those its predecessor held when it died, and puts a message rejected with
  requeue back at the head of its queue (reliable_celery_leases); when this kombu is not one leases
  were built for, it logs one warning and uses the fallback visibility timeout the settings give
  (the longest task's);
- checks the prefork pool for processes that died every ``POOL_CHECK_SECONDS``, not only at their
  exit's event and every 5 s, so that the task of a killed pool process comes back at once; keeps
  the jobs already written to a pool process when the consumer closes, which Celery forgets and so
  runs twice;
- connects to the broker again promptly after losing it (``RECONNECT_INTERVALS``);
- when the settings ask for it (``reliable_celery_poison``), counts the unfinished runs of each task
  that comes back to the worker and moves one that reached the limit to the dead-letter queue
  (reliable_celery_poison);
- when systemd watches the worker (``WatchdogSec=``), sends ``WATCHDOG=1`` from its event loop while
  it consumes every queue it started with, its broker connection is up and, when it has received no
  message for a while, its canary makes the round trip through its own node's queue (``worker_direct``),
  or, when it has no room for a message, through a queue beside it on a channel of its own; from a
  thread while it does not consume (starting, reconnecting, draining);
- in a RabbitMQ cluster (several AMQP broker URLs), when its canary has waited ``NODE_PROBE_SECONDS`` and its
  node does not answer a new connection within as long (frozen: the connection looks up while nothing comes
  through it), drops that connection and consumes through the next node, the silent one last;
- when a warm shutdown begins (``SIGTERM``) with tasks running, tells systemd
  (``EXTEND_TIMEOUT_USEC``) to wait for them until each is past its hard time limit (its own, else
  the longest task's of the settings, ``reliable_celery_stop``) and the stop timeout beyond, and
  writes that deadline to ``$RUNTIME_DIRECTORY/stop-deadline`` for celery_worker_restart's drains;
- when the settings ask for it (``reliable_celery_start_canary``), consumes only its own node's queue
  (``worker_direct``) at start until a canary task sent there has run in its pool; then it consumes every
  queue and is ready; a canary that fails or does not finish in time ends the process (exit 1) before it
  consumed any of its queues, and its predecessor in a handover goes on consuming;
- writes ``$RUNTIME_DIRECTORY/ready`` (the pid, node name, time, the generation it started with,
  ``RELIABLE_CELERY_GENERATION`` from its environment file, whether leases are on, and the start canary's
  seconds) when the worker is ready to consume, and sends ``READY=1`` to ``$NOTIFY_SOCKET`` when systemd
  provides one.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import reliable_celery_leases
import reliable_celery_poison
from celery import Celery, bootsteps
from celery.concurrency.asynpool import AsynPool
from celery.signals import (
    celeryd_after_setup,
    task_failure,
    task_received,
    task_success,
    worker_ready,
    worker_shutting_down,
)
from celery.utils.nodenames import worker_direct
from celery.worker import state as worker_state
from kombu import Connection, Consumer, Queue
from kombu import pools as kombu_pools

CREDENTIAL_SETTINGS = ("broker_url", "result_backend")
# The transport options of each URL setting, where kombu's SentinelChannel and Celery's SentinelBackend read
# master_name and sentinel_kwargs (the sentinels' login).
SENTINEL_TRANSPORT_OPTIONS = {
    "broker_url": "broker_transport_options",
    "result_backend": "result_backend_transport_options",
}
# Given sentinel_kwargs, redis-py talks to the sentinels with those alone: without socket timeouts a sentinel that
# froze (a paused VM, a dropped network path) holds the client's lookup of the primary, and so the service, forever.
# Every new connection looks the primary up, through the sentinels in the URLs' order: with the first frozen, each
# paid the timeout, 5 s, and a restarted worker took 25 s to run its start canary (molecule/ha-redis). A live
# sentinel answers in milliseconds; 1 s leaves a busy host room.
SENTINEL_SOCKET_TIMEOUT_SECONDS = 1.0
# Celery's prefork pool learns that a pool process died when the process's exit wakes its event loop,
# or else at its own check every 5 s. Seen here: 11 of 35 SIGKILLed pool processes were noticed only
# at that check, 0.9-4.8 s later, the task's message and the slot in the pool held meanwhile.
POOL_CHECK_SECONDS = 0.5
# A worker that lost its broker tries again after 0.5 s, then every second: Celery keeps kombu's back-off of
# 2, 4, 6 ... up to 30 s, which it does not expose; a RabbitMQ restart of 7 s left every worker idle 6 s more
# with the broker up. One connection attempt a second per worker is nothing to a broker that refuses it.
RECONNECT_INTERVALS = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}
# WATCHDOG=1 this many times per WatchdogSec=: a late timer tick or a slow ping leaves margin.
WATCHDOG_PINGS_PER_TIMEOUT = 4
# A canary's send tries again once, on a fresh connection: the pool's may be the one a broker restart broke while
# the consumer has already reconnected.
CANARY_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}
# A live RabbitMQ node answers a new connection in milliseconds, and passes the canary on as fast: once the canary
# has waited this many seconds, a new connection to the worker's node is tried, and a node that has not answered it
# within as long is silent (frozen): the worker consumes through another node of the cluster.
NODE_PROBE_SECONDS = 1.0
# The canary's task name: the worker's consumer takes it back itself, nothing runs it.
CANARY_TASK = "reliable_celery.canary"
# How often the threads look whether the canary is due or waits, and the event loop whether its node is silent.
CANARY_LOOK_SECONDS = 0.25
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
# The settings' entry for leases: {"fallback_visibility_timeout": SECONDS}; absent: no leases.
LEASE_SETTING = "reliable_celery_leases"
# The settings' entry for poison containment: {"max_unfinished_runs": N, "dead_letter_queue": NAME}.
POISON_SETTING = "reliable_celery_poison"
# The settings' entry for stops: {"max_task_seconds": N, "stop_timeout_seconds": S}; absent: systemd's
# TimeoutStopSec alone bounds a stop.
STOP_SETTING = "reliable_celery_stop"
# The settings' entry for the start canary: {"task": NAME, "seconds": N}; absent: a worker is ready once it consumes.
START_CANARY_SETTING = "reliable_celery_start_canary"
# The built-in start canary: a task of this module that any release can run.
START_CANARY_TASK = "reliable_celery.start_canary"
# A start canary's task id begins so: the pool process that runs it records its outcome.
START_CANARY_PREFIX = "start-canary-"
START_CANARY_RECORD = "start-canary"
START_CANARY_CHECK_SECONDS = 0.1
# How often a stopping worker tells systemd again how long its tasks may still take: often enough that a
# task that starts meanwhile (one handed to the pool just before the stop) is counted well in time.
STOP_EXTEND_SECONDS = 2
logger = logging.getLogger("reliable_celery")


def _load_app():
    name = os.environ.get("RELIABLE_CELERY_APP")
    if not name:
        return Celery()
    module_name, _, attribute = name.partition(":")
    app = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(app, Celery):
        raise TypeError("RELIABLE_CELERY_APP=%s is not a Celery app but %r" % (name, type(app)))
    return app


def _settings():
    path = os.environ.get("RELIABLE_CELERY_SETTINGS")
    settings = json.loads(Path(path).read_text()) if path else {}
    _record_start(settings)
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    for name in CREDENTIAL_SETTINGS:
        credential = Path(credentials, name) if credentials else None
        if credential is not None and credential.is_file():
            settings[name] = credential.read_text().strip()
    sentinel_logins(settings)
    return settings


def sentinel_logins(settings) -> None:
    """For each URL setting of SETTINGS that is a Redis Sentinel URL, the sentinels' login in its transport options
    (SENTINEL_TRANSPORT_OPTIONS), unless they give ``sentinel_kwargs`` already: the user and password of the first
    URL, which also log in to the primary (the sentinels accept the Redis servers' users), and socket timeouts of
    SENTINEL_SOCKET_TIMEOUT_SECONDS. Runs after start.json is written: the password
    never reaches a record or a log."""
    for url_setting, options_setting in SENTINEL_TRANSPORT_OPTIONS.items():
        url = settings.get(url_setting)
        if not isinstance(url, str) or url.split("://", 1)[0].strip().lower() != "sentinel":
            continue
        options = settings.setdefault(options_setting, {})
        if "sentinel_kwargs" in options:
            continue
        first = urlsplit(url.split(";", 1)[0].strip())
        login = {"username": first.username, "password": first.password}
        options["sentinel_kwargs"] = {
            **{name: unquote(value) for name, value in login.items() if value},
            "socket_timeout": SENTINEL_SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_SECONDS,
        }


def _record_start(settings):
    _write_runtime_record("start.json", {"argv": sys.orig_argv, "settings": settings})


def _runtime_path(name):
    """$RUNTIME_DIRECTORY/NAME, or None without a runtime directory."""
    runtime_directory = os.environ.get("RUNTIME_DIRECTORY")
    return Path(runtime_directory, name) if runtime_directory else None


def _write_runtime_record(name, record):
    """Write RECORD as JSON to $RUNTIME_DIRECTORY/NAME at once: a reader sees the whole record or the one before."""
    path = _runtime_path(name)
    if path is not None:
        partial = path.with_name(name + ".partial")
        partial.write_text(json.dumps(record) + "\n")
        partial.replace(path)


def _read_runtime_record(name):
    """The record of $RUNTIME_DIRECTORY/NAME, or {} while there is none."""
    path = _runtime_path(name)
    try:
        return json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}


def _lease_mode(settings):
    """ "on", "off" or "fallback: WHY"; in fallback the settings get the longest task's visibility timeout."""
    lease = settings.pop(LEASE_SETTING, None)
    if lease is None:
        return "off"
    problem = reliable_celery_leases.probe()
    if problem is None:
        return "on"
    settings["broker_transport_options"]["visibility_timeout"] = lease["fallback_visibility_timeout"]
    logger.warning(
        "visibility leases are off (%s): the visibility timeout is the longest task's, %s s",
        problem,
        lease["fallback_visibility_timeout"],
    )
    return "fallback: " + problem


app = _load_app()
_conf = _settings()
LEASE_MODE = _lease_mode(_conf)
POISON = _conf.pop(POISON_SETTING, None)
STOP = _conf.pop(STOP_SETTING, None)
START_CANARY = _conf.pop(START_CANARY_SETTING, None)
app.conf.update(_conf)
_leases = reliable_celery_leases.Leases(app.conf.broker_transport_options.get("visibility_timeout", 3600))


class _RepeatingStep(bootsteps.StartStopStep):
    """A consumer step that calls a function every so often on the worker's event loop (the consumer's
    timer) from its start until it stops: at a reconnect and at shutdown."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.timer_entries = []

    def repeat(self, c, seconds, function):
        self.timer_entries.append(c.timer.call_repeatedly(seconds, function))

    def stop(self, c):
        while self.timer_entries:
            self.timer_entries.pop().cancel()

    shutdown = stop


class _LeaseStep(_RepeatingStep):
    """Renews the worker's leases from its event loop; on the first start, puts back the messages its
    predecessor held when it died, before anything is consumed (the event loop starts last); after a
    reconnect, renews at once the leases of the tasks that ran through the connection loss."""

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        _leases.node = c.hostname
        reliable_celery_leases.hold_through_reconnects(c, _leases, _in_the_pool)

    def start(self, c):
        channel = c.task_consumer.channel
        reconnected = _leases.channel is not None
        if not reconnected:
            restored = _leases.restore_predecessor(channel)
            if restored:
                logger.warning(
                    "put back %d message(s) this node held when its previous process ended: %s",
                    len(restored),
                    ", ".join(restored),
                )
        _leases.record_deliveries(channel.qos)
        _leases.requeue_at_head(channel.qos)
        _leases.fetch_atomically(channel)
        _leases.channel = channel
        if reconnected:
            _renew()
        self.repeat(c, _leases.interval, _renew)
        # The event loop looks at least this often: an idle channel then fetches again.
        self.repeat(c, reliable_celery_leases.FETCH_IDLE_SECONDS, lambda: None)


def _renew():
    try:
        _leases.renew()
    except Exception:  # the next renewal retries; the connection's own errors reach the consumer
        logger.warning("renewing the visibility leases failed", exc_info=True)


def _lease_received(sender=None, request=None, **_kwargs):
    try:
        _leases.received(request)
    except Exception:
        logger.warning("leasing %s failed", request.id, exc_info=True)


def _renew_while_draining(**_kwargs):
    """A warm shutdown closes the event loop first and then waits for the running tasks: a thread
    renews their leases meanwhile (a new client from the channel's connection pool each time, as
    kombu's own acks use), until the worker holds nothing more."""

    def renew_until_done():
        while True:
            time.sleep(_leases.interval)
            try:
                if not _leases.renew():
                    return
            except Exception:
                logger.warning("renewing the visibility leases of the draining tasks failed", exc_info=True)

    if _leases.channel is not None:
        threading.Thread(target=renew_until_done, name="reliable-celery-leases", daemon=True).start()


if LEASE_MODE == "on":
    app.steps["consumer"].add(_LeaseStep)
    task_received.connect(_lease_received, weak=False)
    worker_shutting_down.connect(_renew_while_draining, weak=False)


class _PoolCheckStep(_RepeatingStep):
    """Checks the pool for processes that died every POOL_CHECK_SECONDS, from the worker's event loop."""

    def start(self, c):
        self.repeat(c, POOL_CHECK_SECONDS, c.pool.maintain_pool)


app.steps["consumer"].add(_PoolCheckStep)


def _written_to_a_process(job) -> bool:
    """A pool job whose payload went to a live pool process, which runs it whatever happens to the consumer."""
    process = getattr(job, "_write_to", None)
    return process is not None and process._is_alive()


def _in_the_pool(request) -> bool:
    """A task request that a pool process runs, or will run: Celery counts it active only once the process's
    acceptance reaches the event loop."""
    if request in worker_state.active_requests:
        return True
    apply_result = getattr(request, "_apply_result", None)  # a weak reference to the pool's job
    job = apply_result() if apply_result is not None else None
    return job is not None and _written_to_a_process(job)


def _keep_written_jobs(flush):
    """Celery's prefork pool, when the consumer closes (a lost connection, a warm shutdown), forgets each job whose
    process has not yet said it accepted it, one written to a process too: that process runs it all the same, its
    result finds no job, and its message is never acked and runs again elsewhere. The jobs written to a live
    process stay, to end and be acked as the running ones are."""
    if getattr(flush, "keeps_written_jobs", False):
        return flush

    @functools.wraps(flush)
    def flush_keeping_written_jobs(pool):
        written = [job for job in tuple(pool._cache.values()) if not job._accepted and _written_to_a_process(job)]
        try:
            return flush(pool)
        finally:
            for job in written:
                if _written_to_a_process(job):
                    pool._cache.setdefault(job._job, job)
                    pool._busy_workers.add(job._write_to.inqW_fd)  # no other job is written to it meanwhile

    flush_keeping_written_jobs.keeps_written_jobs = True
    return flush_keeping_written_jobs


AsynPool.flush = _keep_written_jobs(AsynPool.flush)


class _ReconnectStep(bootsteps.Step):
    """Gives the consumer's connection attempts, at start and after a connection loss, RECONNECT_INTERVALS."""

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        ensure_connected = c.ensure_connected

        def ensure_connected_promptly(connection):
            connection.ensure_connection = functools.partial(connection.ensure_connection, **RECONNECT_INTERVALS)
            return ensure_connected(connection)

        c.ensure_connected = ensure_connected_promptly


app.steps["consumer"].add(_ReconnectStep)

DELAYED_DELIVERY_STEP = "celery.worker.consumer.delayed_delivery.DelayedDelivery"


class _DeclareThroughTheConnectedNodeStep(bootsteps.Step):
    """With quorum queues, Celery's DelayedDelivery step declares its exchanges and queues through every URL of
    broker_url before the consumer consumes, retrying each (1 + 3 + 5 s): a cluster's dead node held the consumer
    15 s. A cluster's exchanges and queues are the whole cluster's: the node the consumer is connected to is
    enough."""

    requires = ("celery.worker.consumer.delayed_delivery:DelayedDelivery",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        step = c.blueprint.steps.get(DELAYED_DELIVERY_STEP)
        if step is not None and not isinstance(step, type):
            step._validate_broker_urls = lambda _urls: {c.connection.as_uri(include_password=True)}


def _replicate_the_direct_queue(sender=None, instance=None, **_kwargs) -> None:
    """With quorum queues (a RabbitMQ cluster), the node's own queue (worker_direct; the watchdog's canary queue
    takes its kind) is one too: a classic durable queue lives on one node, and while that node is down the worker
    cannot declare it and exits (NOT_FOUND, home node down)."""
    queue = app.amqp.queues.get(worker_direct(instance.hostname).name) if app.conf.worker_direct else None
    if queue is not None:
        queue.queue_arguments = {**(queue.queue_arguments or {}), "x-queue-type": "quorum"}


if app.conf.task_default_queue_type == "quorum":
    app.steps["consumer"].add(_DeclareThroughTheConnectedNodeStep)
    celeryd_after_setup.connect(_replicate_the_direct_queue, weak=False)


class _PoisonStep(bootsteps.StartStopStep):
    """Lets poison containment see each task message before Celery does: wraps the consumer's
    strategies, which the Tasks step builds anew at each (re)start of the consumer."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c):
        _containment.node = c.hostname
        for name, strategy in list(c.strategies.items()):
            if name != CANARY_TASK:
                c.strategies[name] = _contained(strategy)


def _contained(strategy):
    def handle(message, *args, **kwargs):
        try:
            taken = _containment.take(message)
        except Exception:  # the task then runs as Celery would run it
            logger.warning("poison containment failed for message %s", message.delivery_tag, exc_info=True)
            taken = False
        if not taken:
            return strategy(message, *args, **kwargs)

    return handle


if POISON is not None:
    _containment = reliable_celery_poison.Containment(app, POISON["max_unfinished_runs"], POISON["dead_letter_queue"])
    app.steps["consumer"].add(_PoisonStep)


def _notify_systemd(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def _watchdog_interval() -> float | None:
    """Seconds between two WATCHDOG=1 when systemd watches this process (``WatchdogSec=``), else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / WATCHDOG_PINGS_PER_TIMEOUT


def _begin_consuming():
    """The event loop runs: from now on it pings, the thread no longer."""
    _consuming.set()
    _ping_watchdog()


class _WatchdogStep(_RepeatingStep):
    """Sends WATCHDOG=1 from the worker's event loop while it consumes every queue it started with
    and its broker connection is up: a frozen process, a blocked main thread or a cancelled consumer
    (``celery control cancel_consumer``, which a reconnect would not undo) sends none, and systemd
    aborts and restarts it. While the worker is not consuming (starting, reconnecting after a broker
    connection loss, draining), a thread sends them: a restart would not bring the broker back, and
    would cut the running tasks short."""

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.queues = None  # the queues of the first start: a reconnect consumes only those still selected
        on_connection_lost = c.on_connection_error_after_connected

        def stop_consuming(exc):
            # Celery cancels the running tasks before it stops the consumer's steps, and on AMQP marks each for
            # retry through the lost broker, seconds each: the thread pings meanwhile. The event loop ran until
            # it saw the loss: that is a ping too.
            _consuming.clear()
            _ping_watchdog()
            return on_connection_lost(exc)

        c.on_connection_error_after_connected = stop_consuming

    def start(self, c):
        if self.queues is None:
            self.queues = [queue.name for queue in c.task_consumer.queues]

        def ping():
            connected = c.connection is not None and c.connection.connected
            if (
                connected
                and all(c.task_consumer.consuming_from(queue) for queue in self.queues)
                and (_canary is None or _canary.healthy())
            ):
                _ping_watchdog()

        # Connected: a ping, as a reconnect shorter than the thread's interval gets none from the thread (a Redis
        # restart left 8.3 s without one). The thread goes on pinging until the event loop runs: a step that starts
        # after this one may still block (Celery's DelayedDelivery retries each broker URL, a dead node's too).
        _ping_watchdog()
        if _start_canary_passed.is_set():  # else the start canary's step begins once it passed
            c.timer.call_after(0, _begin_consuming)
        self.repeat(c, WATCHDOG_INTERVAL, ping)

    def stop(self, c):
        _consuming.clear()
        super().stop(c)

    shutdown = stop


def _ping_watchdog():
    with contextlib.suppress(OSError):  # a ping that fails is a ping missed: the watchdog counts them
        _notify_systemd("WATCHDOG=1")


def _ping_unless_consuming():
    while True:
        if not _consuming.is_set():
            _ping_watchdog()
        time.sleep(WATCHDOG_INTERVAL)


class Canary:
    """A worker's canary: a message to a queue of its own node that its consumer takes back itself. When the worker
    has received no message for ``seconds``, a canary goes out (``due``): through the tasks' channel while the
    worker has room for a message (``through_tasks``), which so proves that channel still fetches, else through a
    channel of its own, as the tasks' takes nothing more until a task ends. Once one has waited ``seconds`` for its
    answer, the worker is not ``healthy`` until it comes: its broker connection may look up while nothing arrives
    through it (a frozen broker, a half-open connection). A canary that went through the tasks' channel is due
    again, aside, once the worker has no room, and one whose send raised (``failed``) at once; the wait of both
    counts from the first try."""

    def __init__(self, seconds: float, clock=time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.restart()

    def restart(self) -> None:
        """A consumer (re)start: nothing outstanding, as if a message had just come."""
        # The canary out: its id (None: its send failed), since when, and whether it went through the tasks' channel.
        self.outstanding: tuple[str | None, float, bool] | None = None
        self.heard = self.clock()  # when a message last came: a task or the canary

    def received(self) -> None:
        self.heard = self.clock()

    def due(self, room: bool) -> bool:
        if self.outstanding is not None:
            canary_id, _since, through_tasks = self.outstanding
            return canary_id is None or (through_tasks and not room)
        return self.clock() - self.heard >= self.seconds

    def sent(self, canary_id: str, through_tasks: bool) -> None:
        since = self.outstanding[1] if self.outstanding is not None else self.clock()
        self.outstanding = (canary_id, since, through_tasks)

    def failed(self, canary_id: str) -> None:
        """Its send raised: nothing to wait for, and the next try is due."""
        if self.outstanding is not None and self.outstanding[0] == canary_id:
            self.outstanding = (None, *self.outstanding[1:])

    def answered(self, canary_id: str | None) -> None:
        """A canary came back: the one outstanding, or one an earlier process of this node sent."""
        if canary_id is not None and self.outstanding is not None and self.outstanding[0] == canary_id:
            self.outstanding = None
            self.received()

    def healthy(self) -> bool:
        return not self.waited(self.seconds)

    def waited(self, seconds: float) -> bool:
        """Whether the canary out has waited SECONDS for its answer."""
        return self.outstanding is not None and self.clock() - self.outstanding[1] >= seconds


class _WorkerCanary(Canary):
    """The Canary of this worker: a thread sends it; the consumer takes it back as a task (a strategy for
    CANARY_TASK that runs nothing) from its node's own queue, or from the canary queue beside it on a channel of
    its own without acks (_CanaryStep), which no prefetch limit holds back."""

    queue = None

    def start(self, c) -> None:
        self.restart()
        c.strategies[CANARY_TASK] = self.take_task
        if self.queue is None:
            self.queue, self.queue_aside = _direct_queue(c.hostname), _canary_queue(c.hostname)
            threading.Thread(target=self.send_when_due, args=(c,), name="reliable-celery-canary", daemon=True).start()

    def take_task(self, message, *_args, **_kwargs) -> None:
        message.ack_log_error(logger, (Exception,))
        self.take(message)

    def take(self, message) -> None:
        self.answered((message.headers or {}).get("id"))

    def send_when_due(self, c) -> None:
        """Send a canary when one is due, while the worker consumes. Its publish may block (a frozen broker):
        it counts as out from before, and the worker stops being healthy meanwhile."""
        while True:
            time.sleep(CANARY_LOOK_SECONDS)
            room = _has_room(c)
            if _consuming.is_set() and self.due(room):
                self.send(through_tasks=room)

    def send(self, through_tasks: bool) -> None:
        canary_id = "canary-" + uuid.uuid4().hex
        self.sent(canary_id, through_tasks)
        queue = self.queue if through_tasks else self.queue_aside
        try:
            app.send_task(CANARY_TASK, task_id=canary_id, queue=queue, retry=True, retry_policy=CANARY_RETRY)
        except Exception as exc:
            self.failed(canary_id)
            logger.warning("sending the watchdog's canary failed, trying again: %r", exc)


class _CanaryStep(bootsteps.ConsumerStep):
    """Starts the canary with each consumer start (after the Tasks step, whose strategies it joins) and takes it
    back from its queue aside, on a channel of its own (a ConsumerStep opens one at each start), without acks."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c):
        _canary.start(c)
        super().start(c)

    def get_consumers(self, channel):
        return [Consumer(channel, queues=[_canary.queue_aside], no_ack=True, on_message=_canary.take)]

    def _close(self, c, cancel_consumers=True):
        # kombu's Redis channel reads the reply of the BRPOP it waits on before it closes, up to its brpop_timeout
        # (1 s) into every stop: the canary's channel drops its connection instead, and with it a canary it may hold.
        for consumer in self.consumers or []:
            waiting = getattr(consumer.channel, "_in_poll", None)
            if waiting:
                waiting.disconnect()
                consumer.channel._in_poll = None
        super()._close(c, cancel_consumers)


def _direct_queue(hostname):
    """The node's own queue as the consumer declared it: with quorum queues a quorum queue too
    (_replicate_the_direct_queue)."""
    return app.amqp.queues.get(worker_direct(hostname).name) or worker_direct(hostname)


def _has_room(c) -> bool:
    """Whether the worker would take one more message: it holds fewer than its prefetch count."""
    prefetch = c.qos.value if c.qos is not None else 0
    return not prefetch or len(worker_state.reserved_requests) < prefetch


def _canary_queue(hostname):
    """The canary's queue aside, beside the node's own queue and of its kind (a quorum queue in a cluster: a classic
    queue lives on one node, which may be the one down), reached through the default exchange."""
    direct = _direct_queue(hostname)
    name = f"{direct.name}.canary"
    return Queue(name, routing_key=name, durable=direct.durable, queue_arguments=direct.queue_arguments)


WATCHDOG_INTERVAL = _watchdog_interval()
_consuming = threading.Event()
# The canary's round trip when systemd watches the worker and its node has its own queue (the role sets
# worker_direct with the watchdog): one goes out at most every half ping interval, CANARY_LOOK_SECONDS late at most.
_canary = _WorkerCanary(WATCHDOG_INTERVAL / 2) if WATCHDOG_INTERVAL is not None and app.conf.worker_direct else None
if WATCHDOG_INTERVAL is not None:
    app.steps["consumer"].add(_WatchdogStep)
    threading.Thread(target=_ping_unless_consuming, name="reliable-celery-watchdog", daemon=True).start()
if _canary is not None:
    app.steps["consumer"].add(_CanaryStep)
    task_received.connect(lambda **_kwargs: _canary.received(), weak=False)


def cluster_urls(broker_url) -> list[str]:
    """The broker URLs of a RabbitMQ cluster (``;``-separated or a list, every one AMQP, more than one), else []."""
    urls = broker_url.split(";") if isinstance(broker_url, str) else list(broker_url or [])
    urls = [url.strip() for url in urls if url and url.strip()]
    amqp = all(url.split("://", 1)[0] in AMQP_SCHEMES for url in urls)
    return urls if amqp and len(urls) > 1 else []


def broker_node(url: str) -> tuple:
    """The host and port a broker URL names."""
    parts = urlsplit(url if "://" in url else "amqp://" + url)
    return (parts.hostname, parts.port or (5671 if parts.scheme == "amqps" else 5672))


def silent_node_last(urls: list[str], silent_url: str) -> list[str]:
    """URLS with those of the node SILENT_URL names moved to the end: a new connection tries the others first instead
    of waiting out its connect timeout on it."""
    silent = broker_node(silent_url)
    return [url for url in urls if broker_node(url) != silent] + [url for url in urls if broker_node(url) == silent]


class _SilentNodeStep(_RepeatingStep):
    """In a RabbitMQ cluster, leaves the node the consumer is connected to when it has gone silent (frozen: its
    connections look up while nothing comes through them): the canary has waited NODE_PROBE_SECONDS and a new
    connection to that node gets no answer within as long. A thread watches and probes, as the event loop
    soon blocks: Celery's worker heartbeat events wait for the node's publisher confirms. When the node is silent,
    the thread puts it last among the broker URLs and drops the connections to it (``leave``), which unblocks the
    event loop (their close would wait for the node too); the event loop then raises a connection
    error, as Celery's own heartbeat check does, and Celery reconnects through the other nodes. A live node whose
    queue waits for its cluster (a frozen leader elsewhere) answers the probe: the worker keeps its connection and
    its running tasks, which a lost AMQP connection would cancel."""

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.c = self.url = None
        self.probed = None  # when the last probe began: one per canary period
        self.silent = None  # the URL the probe found silent
        self.watching = False

    def start(self, c):
        self.c, self.url, self.silent = c, c.connection.as_uri(include_password=True), None
        self.repeat(c, CANARY_LOOK_SECONDS, functools.partial(self.check, c))
        if not self.watching:
            self.watching = True
            threading.Thread(target=self.watch, name="reliable-celery-node-watch", daemon=True).start()

    def check(self, c):
        if self.silent == self.url:
            raise ConnectionError(
                f"the broker node {c.connection.as_uri()} answers no new connection while the worker's canary waits "
                "for it: consuming through another node"
            )

    def watch(self):
        while True:
            time.sleep(CANARY_LOOK_SECONDS)
            if _consuming.is_set():
                try:
                    self.watch_once()
                except Exception:  # the next look may do better; the watchdog still bounds a silent node
                    logger.warning("watching the broker node failed", exc_info=True)

    def watch_once(self):
        c, url, now = self.c, self.url, time.monotonic()
        if (self.probed is not None and now - self.probed < _canary.seconds) or not _canary.waited(NODE_PROBE_SECONDS):
            return
        self.probed = now
        connection = app.connection_for_read(url, connect_timeout=NODE_PROBE_SECONDS)
        try:
            connection.ensure_connection(max_retries=0)
        except Exception as exc:
            connection.collect()  # no close handshake with a node that does not answer
            logger.warning("the broker node %s answers no new connection: %r", connection.as_uri(), exc)
            self.leave(c, url)
        else:
            connection.release()

    def leave(self, c, url):
        """Put the node of URL last, and drop the connections to it that may hold a thread waiting for it: Celery's
        events' and those of the connection pools (poison containment's and the canary's publishes). Publishes go
        through new pools, of the URLs in their new order, as Celery's own after-fork reset does; kombu keeps its
        pools by their first URL, so they are forgotten too: a later order starting with the same node would get
        an old pool back, whose connections may have failed over to a node that went silent since."""
        urls = ";".join(silent_node_last(cluster_urls(app.conf.broker_read_url), url))
        app.conf.broker_read_url = app.conf.broker_write_url = urls
        pools = list(kombu_pools.connections.values())  # the app's pool among them: Celery takes it from kombu
        app._pool = app.amqp._producer_pool = None
        kombu_pools.connections.clear()
        kombu_pools.producers.clear()
        events = getattr(getattr(c, "event_dispatcher", None), "connection", None)
        pooled = [connection for pool in pools for connection in _pooled_connections(pool)]
        for connection in [events, *pooled]:
            if isinstance(connection, Connection) and broker_node(connection.as_uri()) == broker_node(url):
                connection.collect()
        self.silent = url


def _pooled_connections(pool) -> list:
    """The connections a kombu connection pool holds, idle (some not made yet) and in use."""
    return [*getattr(getattr(pool, "_resource", None), "queue", ()), *getattr(pool, "_dirty", ())]


if _canary is not None and cluster_urls(app.conf.broker_read_url):
    app.steps["consumer"].add(_SilentNodeStep)


def seconds_to_limits(requests, now, task_time_limit, max_task_seconds):
    """Seconds from NOW (wall clock) until the last of the REQUESTS passes its hard time limit, or None
    without requests. A request's limit is Celery's for it: the message's, else its task's, else the
    app's TASK_TIME_LIMIT; without any, MAX_TASK_SECONDS. A request not started yet counts from now."""
    ends = [
        (request.time_start or now)
        + (request.time_limits[0] or getattr(request.task, "time_limit", None) or task_time_limit or max_task_seconds)
        for request in requests
    ]
    return max(ends) - now if ends else None


def _held_requests():
    """The requests the worker holds (running or handed to the pool), read from another thread than the one
    that changes the set: a change during the copy is retried."""
    while True:
        with contextlib.suppress(RuntimeError):  # "Set changed size during iteration"
            return list(worker_state.reserved_requests)


def _extend_stop_while_tasks_run(**_kwargs):
    """From the SIGTERM of a warm shutdown until the process exits: while a held task is within its hard time
    limit, tell systemd to wait for it (EXTEND_TIMEOUT_USEC: its limit + the stop timeout, which systemd only
    ever lengthens) and record the same deadline (CLOCK_MONOTONIC) for celery_worker_restart. A task past its
    limit gets the stop timeout, no more: then systemd SIGKILLs what is left."""

    def extend():
        while True:
            left = seconds_to_limits(_held_requests(), time.time(), app.conf.task_time_limit, STOP["max_task_seconds"])
            if left is not None and left > 0:
                seconds = left + STOP["stop_timeout_seconds"]
                record = {"pid": os.getpid(), "stop_by_monotonic": time.monotonic() + seconds}
                _write_runtime_record("stop-deadline", record)
                with contextlib.suppress(OSError):
                    _notify_systemd("EXTEND_TIMEOUT_USEC=%d" % (seconds * 1e6))
            time.sleep(STOP_EXTEND_SECONDS)

    threading.Thread(target=extend, name="reliable-celery-stop", daemon=True).start()


if STOP is not None:
    worker_shutting_down.connect(_extend_stop_while_tasks_run, weak=False)


def start_canary_outcome(record, canary_id, task, waited, seconds):
    """None while the start canary CANARY_ID (of TASK) may still finish, after WAITED of its SECONDS; once it
    is decided, "" when it passed (RECORD, the pool's record, names it without an error), else why it failed."""
    if record.get("id") == canary_id:
        return "" if record.get("error") is None else "%s failed (%s)" % (task, record["error"])
    if waited >= seconds:
        return "%s did not finish within %s s" % (task, seconds)
    return None


class _StartCanaryStep(_RepeatingStep):
    """At the worker's start, holds back every queue but its node's own (``worker_direct``) and sends a canary task
    there, which a pool process of this release runs. Once it succeeded, the worker consumes every queue and is
    ready; if it failed or did not finish within its seconds, the process ends (exit 1) having taken no message
    of its queues, and celery_worker_restart leaves its predecessor consuming. A reconnect meanwhile holds the
    queues back again; once passed, a reconnect consumes them all at once."""

    # With the watchdog, after its step: that records the queues the worker started with, before any is held back.
    requires = _RepeatingStep.requires + ((_WatchdogStep,) if WATCHDOG_INTERVAL is not None else ())

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.canary_id = None
        self.held = []
        self.sent_at = None

    def start(self, c):
        if _start_canary_passed.is_set():
            return
        direct = worker_direct(c.hostname).name
        self.held = [queue.name for queue in c.task_consumer.queues if queue.name != direct]
        for name in self.held:
            c.task_consumer.cancel_by_queue(name)
        if self.canary_id is None:
            self.canary_id = START_CANARY_PREFIX + uuid.uuid4().hex
            self.sent_at = time.monotonic()
            if START_CANARY["task"] not in app.tasks:
                self.fail("%s is not a task of this app" % START_CANARY["task"])
            # Sent once the queue is declared: on AMQP, a message to a node queue not yet bound is dropped.
            threading.Thread(
                target=self.send, args=(c.hostname,), name="reliable-celery-start-canary", daemon=True
            ).start()
        self.repeat(c, START_CANARY_CHECK_SECONDS, functools.partial(self.check, c))

    def send(self, hostname):
        try:
            app.send_task(START_CANARY["task"], task_id=self.canary_id, queue=_direct_queue(hostname), retry=True)
        except Exception as exc:
            logger.warning("sending the start canary failed: %r", exc)

    def check(self, c):
        waited = time.monotonic() - self.sent_at
        record = _read_runtime_record(START_CANARY_RECORD)
        outcome = start_canary_outcome(record, self.canary_id, START_CANARY["task"], waited, START_CANARY["seconds"])
        if outcome is None:
            return
        if outcome:
            self.fail(outcome)
        seconds = round(waited, 3)
        _start_canary_passed.set()
        self.stop(c)
        for name in self.held:
            c.add_task_queue(name)
        if WATCHDOG_INTERVAL is not None:
            _begin_consuming()
        logger.info("start canary %s passed in %.1f s: consuming every queue", START_CANARY["task"], seconds)
        wait = _leases.next_round_seconds(c.task_consumer.channel)
        c.timer.call_after(wait, functools.partial(_announce_ready, c.hostname, seconds))

    @staticmethod
    def fail(why):
        logger.critical("start canary: %s. This worker consumes none of its queues and stops.", why)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)  # at once: a warm shutdown would wait for the pool, where the canary may hang


def _record_start_canary(sender=None, task_id=None, exception=None, **_kwargs):
    """In the pool process that ran it: a start canary's outcome, for its worker's main process."""
    task_id = task_id or getattr(getattr(sender, "request", None), "id", None)
    if task_id and task_id.startswith(START_CANARY_PREFIX):
        error = None if exception is None else "%s: %s" % (type(exception).__name__, exception)
        _write_runtime_record(START_CANARY_RECORD, {"id": task_id, "error": error})


_start_canary_passed = threading.Event()
if START_CANARY is None:
    _start_canary_passed.set()
else:
    if START_CANARY["task"] == START_CANARY_TASK:

        @app.task(name=START_CANARY_TASK, shared=False, ignore_result=True)
        def start_canary():
            """The built-in start canary: a pool process of this release takes a task and runs it."""

    app.steps["consumer"].add(_StartCanaryStep)
    task_success.connect(_record_start_canary, weak=False)
    task_failure.connect(_record_start_canary, weak=False)


@worker_ready.connect(weak=False)
def _worker_ready(sender=None, **_kwargs) -> None:
    if _start_canary_passed.is_set():  # else the start canary's step announces it
        _announce_ready(getattr(sender, "hostname", None))


def _announce_ready(node, start_canary_seconds=None) -> None:
    record = {
        "pid": os.getpid(),
        "node": node,
        "ready_at": time.time(),
        "generation": os.environ.get("RELIABLE_CELERY_GENERATION"),
        "leases": LEASE_MODE,
        "start_canary_seconds": start_canary_seconds,
    }
    _write_runtime_record("ready", record)
    _notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
