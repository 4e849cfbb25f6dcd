"""Celery app wrapper installed by the reliable.celery collection into every release.

The units run ``celery -A reliable_celery_app worker|beat|flower``. This module:

- imports the app object named by ``RELIABLE_CELERY_APP`` (``package.module:attribute``), or
  makes a bare Celery app when there is none (Flower needs no app code);
- applies the settings in the JSON file named by ``RELIABLE_CELERY_SETTINGS`` with
  ``app.conf.update``, which wins over ``config_from_object`` (the Django pattern) and over
  what the app set itself; ``celery --config`` would be silently ignored in that case;
- sets ``broker_url`` and ``result_backend`` from the systemd credentials of the same names
  (``$CREDENTIALS_DIRECTORY``, ``LoadCredential=``): the passwords in them never enter the
  environment, which every process a task starts would inherit;
- writes ``$RUNTIME_DIRECTORY/start.json`` (its command line and the settings of the file) when it
  starts, from which celery_worker_restart can start this generation again if its successor
  cannot start (plugins/module_utils/_rollback.py);
- writes ``$RUNTIME_DIRECTORY/ready`` (the pid, node name, time and the generation it started with,
  ``RELIABLE_CELERY_GENERATION`` from its environment file) when the worker is ready to consume, and
  sends ``READY=1`` to ``$NOTIFY_SOCKET`` when systemd provides one.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from celery import Celery
from celery.signals import worker_ready

CREDENTIAL_SETTINGS = ("broker_url", "result_backend")


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
    return settings


def _record_start(settings):
    runtime_directory = os.environ.get("RUNTIME_DIRECTORY")
    if runtime_directory:
        record = Path(runtime_directory) / "start.json"
        record.write_text(json.dumps({"argv": sys.orig_argv, "settings": settings}) + "\n")


app = _load_app()
app.conf.update(_settings())


def _notify_systemd(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


@worker_ready.connect(weak=False)
def _announce_ready(sender=None, **_kwargs) -> None:
    runtime_directory = os.environ.get("RUNTIME_DIRECTORY")
    if runtime_directory:
        marker = Path(runtime_directory) / "ready"
        partial = marker.with_name("ready.partial")
        node = getattr(sender, "hostname", None)
        record = {
            "pid": os.getpid(),
            "node": node,
            "ready_at": time.time(),
            "generation": os.environ.get("RELIABLE_CELERY_GENERATION"),
        }
        partial.write_text(json.dumps(record) + "\n")
        partial.replace(marker)
    _notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
