# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The generation filter: the digest that names what a service runs."""

from __future__ import annotations

import hashlib
import json

from ansible.errors import AnsibleFilterError

DIGEST_LENGTH = 16


def generation(data, *parts):
    """A short sha256 of DATA and PARTS in canonical JSON (sorted keys): equal inputs give
    equal generations on every run and controller; any change in them gives another."""
    try:
        canonical = json.dumps([data, *parts], sort_keys=True, separators=(",", ":"), default=_unsupported)
    except (TypeError, ValueError) as error:
        raise AnsibleFilterError("generation: %s" % error) from None
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_LENGTH]


def _unsupported(value):
    raise TypeError("cannot digest a value of type %s" % type(value).__name__)


class FilterModule:
    def filters(self):
        return {"generation": generation}
