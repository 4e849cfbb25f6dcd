# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The redis_sentinel_client_settings filter: the Celery settings a client of Redis through Sentinel needs."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# The name the sentinels know the primary by (SENTINEL MONITOR NAME ...), as the broker role accepts it.
MASTER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Each URL setting and the transport options its connection reads master_name from (kombu's SentinelChannel,
# Celery's SentinelBackend).
TRANSPORT_OPTIONS = (("broker", "broker_transport_options"), ("backend", "result_backend_transport_options"))
# A client's connection to a primary that is lost without a word (its host stopped, frozen or cut off) would wait
# for TCP to give up, 40 s and more (measured: molecule/ha-redis): after this long without an answer the client
# asks the sentinels again, which have promoted a replica by then (docs/delivery.md). kombu's BRPOP waits 1 s.
BROKER_SOCKET_TIMEOUT_SECONDS = 5


def redis_sentinel_client_settings(broker, backend, master_name, variable):
    """The settings a client of BROKER and BACKEND (the celery_url filter's parts) needs: ``master_name`` MASTER_NAME
    in the transport options of each whose URL is a sentinel:// URL, else none. MASTER_NAME is checked only then;
    the error names VARIABLE. The sentinels' login (sentinel_kwargs) comes from the URL's credential, which the
    wrapper reads at start (roles/celery_base/files/reliable_celery_app.py): it never enters these settings."""
    urls = {"broker": broker, "backend": backend}
    sentinel_options = [options for kind, options in TRANSPORT_OPTIONS if (urls[kind] or {}).get("is_sentinel")]
    if not sentinel_options:
        return {}
    if not isinstance(master_name, str) or not MASTER_NAME.match(master_name):
        raise AnsibleFilterError(
            f"{variable} must be letters, digits, '-' or '_': the name the sentinels know the Redis primary by "
            f"(celery_broker_redis_sentinel_master on the broker), got {master_name!r}"
        )
    settings = {options: {"master_name": master_name} for options in sentinel_options}
    if "broker_transport_options" in settings:
        settings["broker_transport_options"] |= {
            "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
        }
    return settings


class FilterModule:
    def filters(self):
        return {"redis_sentinel_client_settings": redis_sentinel_client_settings}
