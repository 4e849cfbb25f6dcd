"""Celery app wrapper installed by the reliable.celery collection (role celery_worker).

The worker unit runs ``celery -A reliable_celery_app worker``. This module:

- imports the app object named by ``RELIABLE_CELERY_APP`` (``package.module:attribute``);
- applies the settings in the JSON file named by ``RELIABLE_CELERY_SETTINGS`` with
  ``app.conf.update``, which wins over ``config_from_object`` (the Django pattern) and over
  what the app set itself; ``celery --config`` would be silently ignored in that case;
- writes ``$RUNTIME_DIRECTORY/ready`` (the pid, node name and time) when the worker is ready to
  consume, and sends ``READY=1`` to ``$NOTIFY_SOCKET`` when systemd provides one.

Broker and result backend URLs come from ``CELERY_BROKER_URL``/``CELERY_RESULT_BACKEND`` in the
environment file, which Celery prefers over any configured value.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import time
from pathlib import Path

from celery.signals import worker_ready


def _load_app():
    module_name, _, attribute = os.environ["RELIABLE_CELERY_APP"].partition(":")
    return getattr(importlib.import_module(module_name), attribute)


app = _load_app()
app.conf.update(json.loads(Path(os.environ["RELIABLE_CELERY_SETTINGS"]).read_text()))


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
        partial.write_text(json.dumps({"pid": os.getpid(), "node": node, "ready_at": time.time()}) + "\n")
        partial.replace(marker)
    _notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
