# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The celery_requirement filter: the pip requirement for Celery with the extras a service needs."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# An exact release: 5.7.0, 5.7.0rc1, 2.2.0.post1. Never `latest` or a range: a release is
# identified by what it installs.
EXACT_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*((a|b|rc|\.post|\.dev)[0-9]+)?$")
_EXTRA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# The extras whose transports kombu imports for these URL schemes (a missing one crashes the
# worker at start-up: celery[redis] pulls in `packaging`, which kombu 5.7's Redis transport needs).
_SCHEME_EXTRAS = {"redis": "redis", "rediss": "redis"}
_POOL_EXTRAS = {"gevent": "gevent", "eventlet": "eventlet"}


def celery_requirement(version, schemes=(), extras=(), pools=(), variable="celery_version"):
    """``celery[EXTRAS]==VERSION``: the extras for SCHEMES (URL schemes), POOLS and EXTRAS, sorted."""
    if not isinstance(version, str) or not EXACT_VERSION.match(version):
        raise AnsibleFilterError(f"{variable} must be an exact version such as 5.7.0, got {version!r}")
    for extra in extras:
        if not isinstance(extra, str) or not _EXTRA.match(extra):
            raise AnsibleFilterError(f"Celery extras must be names such as redis or sqs, got {extra!r}")
    wanted = set(extras)
    wanted.update(_SCHEME_EXTRAS[scheme] for scheme in schemes if scheme in _SCHEME_EXTRAS)
    wanted.update(_POOL_EXTRAS[pool] for pool in pools if pool in _POOL_EXTRAS)
    return "celery%s==%s" % ("[%s]" % ",".join(sorted(wanted)) if wanted else "", version)


class FilterModule:
    def filters(self):
        return {"celery_requirement": celery_requirement}
