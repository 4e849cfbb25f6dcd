# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The url_quote filter: a user name or password percent-encoded for the user-info part of a URL."""

from __future__ import annotations

from urllib.parse import quote

from ansible.errors import AnsibleFilterError


def url_quote(value):
    """VALUE with every character but letters, digits and ``_.-~`` percent-encoded.

    kombu (and celery's Redis backend, and Flower) unquote the user and password once, so a
    password quoted here reaches the broker unchanged: ``/ # ? @ : %`` included (``%40`` becomes
    ``%2540``, not ``@``). Ansible's ``urlencode`` keeps ``/``, which ends a URL's host part.
    """
    if not isinstance(value, str):
        raise AnsibleFilterError(f"url_quote: expected a string, got {type(value).__name__}")
    return quote(value, safe="")


class FilterModule:
    def filters(self):
        return {"url_quote": url_quote}
