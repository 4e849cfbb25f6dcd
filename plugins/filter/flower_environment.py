# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The flower_environment and flower_conf filters: Flower's options as Flower reads them."""

from __future__ import annotations

import json


def flower_environment(options):
    """``{FLOWER_NAME: value}`` for each option: lists joined with commas (Flower's multiple
    options), booleans as ``true``/``false``, other values as they are."""
    return {"FLOWER_" + str(name).upper(): _as_flower_reads(value) for name, value in options.items()}


def _as_flower_reads(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return value


# Flower (2.2) serves its Prometheus metrics (/metrics) without asking for a login, unlike every
# other page; tornado's decorator gives it the UI's basic auth (a missing or wrong login: 401).
# Flower executes the file once at start; if a Flower version moved the class, it fails to start
# (and the role reports it) rather than serve the metrics openly.
PROTECT_METRICS = """\
import tornado.web
from flower.views import monitor
monitor.Metrics.get = tornado.web.authenticated(monitor.Metrics.get)
"""


def flower_conf(basic_auth):
    """Flower's --conf file (Python, which Flower executes) for BASIC_AUTH, a list of
    ``{username, password}``: ``basic_auth = ["user:password", ...]``, and /metrics behind the
    same login. A JSON list of strings is a Python literal, so no user or password can break out
    of it."""
    users = [f"{entry['username']}:{entry['password']}" for entry in basic_auth]
    return f"basic_auth = {json.dumps(users)}\n{PROTECT_METRICS}"


class FilterModule:
    def filters(self):
        return {"flower_environment": flower_environment, "flower_conf": flower_conf}
