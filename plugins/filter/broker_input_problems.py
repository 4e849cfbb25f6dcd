# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The broker_input_problems filter: what in celery_broker's variables the role refuses before it
changes anything, beyond the argument spec and the filters that raise their own errors; each
problem a message naming the variable to change, never the password."""

from __future__ import annotations

import re

from ansible_collections.reliable.celery.plugins.plugin_utils.problems import problems

PASSWORD_MINIMUM = 16
PASSWORD_REFUSED_CHARACTERS = re.compile(r"[\s\"'\\]")
# epmd and Erlang distribution.
ERLANG_PORTS = (4369, 25672)
MAXMEMORY = re.compile(r"[0-9]+([kKmMgG][bB]?)?")
# They go into the broker URL unescaped.
RABBITMQ_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _port(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _password_problem(found):
    password = found["password"]
    if found["type"] != "rabbitmq" or (
        isinstance(password, str)
        and len(password) >= PASSWORD_MINIMUM
        and not PASSWORD_REFUSED_CHARACTERS.search(password)
    ):
        return None
    return (
        f"celery_broker_password must be at least {PASSWORD_MINIMUM} characters without whitespace, quotes or"
        " backslashes (the RabbitMQ user's password; workers percent-encode it in their broker URL:"
        " reliable.celery.url_quote)."
    )


def _ports_problem(found):
    redis, rabbitmq = found["redis_port"], found["rabbitmq_port"]
    if _port(redis) and _port(rabbitmq) and rabbitmq not in ERLANG_PORTS:
        return None
    return (
        f"celery_broker_redis_port must be 1-65535 (got {redis}); celery_broker_rabbitmq_port must be 1-65535 and not"
        f" 4369 or 25672, the ports of epmd and Erlang distribution (got {rabbitmq})."
    )


def _maxmemory_problem(found):
    if MAXMEMORY.fullmatch(str(found["redis_maxmemory"])):
        return None
    return f"celery_broker_redis_maxmemory must be a size such as 0, 512mb or 2gb (got {found['redis_maxmemory']})."


def _rabbitmq_names_problem(found):
    user, vhost = found["rabbitmq_user"], found["rabbitmq_vhost"]
    if RABBITMQ_NAME.fullmatch(str(user)) and user != "guest" and RABBITMQ_NAME.fullmatch(str(vhost)):
        return None
    return (
        "celery_broker_rabbitmq_user and celery_broker_rabbitmq_vhost must be 1-64 letters, digits, '.', '_' or '-'"
        " starting with a letter or digit (they go into the broker URL unescaped), and celery_broker_rabbitmq_user"
        f" not guest (the role deletes guest); got user {user}, vhost {vhost}."
    )


def broker_input_problems(found):
    """The problems of the broker's variables, FOUND as the role gathers them (tasks/preflight.yml): the RabbitMQ
    password, the ports, Redis's maxmemory, the RabbitMQ user and virtual host. An empty list: none."""
    checks = (_password_problem, _ports_problem, _maxmemory_problem, _rabbitmq_names_problem)
    return problems("broker_input_problems", "the broker's variables", found, checks)


class FilterModule:
    def filters(self):
        return {"broker_input_problems": broker_input_problems}
