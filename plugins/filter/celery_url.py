# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The celery_url filter: a broker or result backend URL parsed the way kombu parses it."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlparse

from ansible.errors import AnsibleFilterError

# Redis through its Sentinels (kombu's SentinelChannel, Celery's SentinelBackend): a Redis broker or backend, whose
# URL lists the sentinels, separated by ';'.
SENTINEL_SCHEMES = ("sentinel",)
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", *SENTINEL_SCHEMES)
REDIS_SCHEMES = ("redis", "rediss", *SENTINEL_SCHEMES)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
# A systemd EnvironmentFile value is one line; kombu (urllib) would silently drop tab and newline.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENCODE_HINT = (
    "a user or password with '/', '?', '#', '@' or '%' must be percent-encoded (the reliable.celery.url_quote filter)"
)


def celery_url(url, variable, kind="broker"):
    """The parts of URL as kombu.utils.url.url_to_parts finds them, never the password itself.

    ``kind`` is ``broker`` (a scheme of BROKER_SCHEMES, a host required) or ``backend`` (empty
    allowed; any ``SCHEME://``; Redis URLs are checked like a broker's). A ``sentinel`` URL is Redis
    (``is_redis``) through its sentinels (``is_sentinel``). Every error names VARIABLE and never shows
    the URL: it holds the password.
    """
    if kind not in ("broker", "backend"):
        raise AnsibleFilterError(f"celery_url: kind must be broker or backend, got {kind!r}")
    allowed = ", ".join(BROKER_SCHEMES)
    example = "(for example redis://:PASSWORD@HOST:6379/0 or amqp://USER:PASSWORD@HOST:5672/VHOST)"
    if url is None or url == "":
        if kind == "backend":
            return {"scheme": "", "is_redis": False, "is_sentinel": False}
        raise AnsibleFilterError(f"{variable} must be a broker URL with scheme one of {allowed} {example}")
    if not isinstance(url, str):
        raise AnsibleFilterError(f"{variable} must be a string, got {type(url).__name__}")
    if _CONTROL.search(url):
        raise AnsibleFilterError(f"{variable} must be one line without control characters")
    if kind == "broker" or url.partition("://")[0].lower() in SENTINEL_SCHEMES:
        # A broker URL may list failover URLs, separated by ';' (a RabbitMQ cluster's nodes): kombu connects to
        # the first that answers. A sentinel URL, of a broker or a result backend, lists the sentinels this way.
        first, *others = [_one_url(part, variable, kind, allowed, example) for part in url.split(";")]
        if any(parts["scheme"] != first["scheme"] for parts in others):
            one = "every URL a sentinel:// URL" if first["is_sentinel"] else "one broker, one scheme"
            raise AnsibleFilterError(f"{variable} lists URLs of different schemes: {one}")
        return {**first, "hosts": [parts["hostname"] for parts in (first, *others)]}
    return _one_url(url, variable, kind, allowed, example)


def _one_url(url, variable, kind, allowed, example):
    scheme, separator, _rest = url.partition("://")
    if not separator or not _SCHEME.match(scheme):
        raise AnsibleFilterError(f"{variable} must be a URL, SCHEME://... {example}")
    scheme = scheme.lower()
    if kind == "broker" and scheme not in BROKER_SCHEMES:
        raise AnsibleFilterError(f"{variable} has scheme {scheme!r}; allowed: {allowed} {example}")
    parts = {"scheme": scheme, "is_redis": scheme in REDIS_SCHEMES, "is_sentinel": scheme in SENTINEL_SCHEMES}
    if kind == "backend" and not parts["is_redis"]:
        return parts
    parts.update(_url_to_parts(url, scheme, variable))
    if not parts["hostname"]:
        raise AnsibleFilterError(f"{variable} has no host as kombu reads it: {_ENCODE_HINT}")
    return parts


def _url_to_parts(url, scheme, variable):
    """kombu.utils.url.url_to_parts, without the password in the result."""
    # kombu cuts the scheme by its length, then parses the rest with HTTP semantics.
    try:
        parsed = urlparse("http://" + url[len(scheme) + 3 :])
        port = parsed.port
        hostname = parsed.hostname
    except ValueError:
        # urllib's message quotes the text it took for the port: with a '/' in the password that
        # is part of the password.
        raise AnsibleFilterError(
            f"{variable} cannot be parsed as kombu parses it: the port must be a number from 0 to 65535, an IPv6 "
            f"host must be in brackets, and {_ENCODE_HINT}"
        ) from None
    path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    return {
        "hostname": unquote(hostname or "") or None,
        "port": port,
        "userid": unquote(parsed.username or "") or None,
        "has_password": bool(unquote(parsed.password or "")),
        "virtual_host": unquote(path) or None,
        "query": dict(parse_qsl(parsed.query)),
    }


class FilterModule:
    def filters(self):
        return {"celery_url": celery_url}
