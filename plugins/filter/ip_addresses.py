# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ip_address and bind_addresses filters: listening addresses checked with Python's ipaddress."""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError


def ip_address(value, variable):
    """VALUE as an IP address: ``{address, version, is_loopback, is_unspecified, loopback}``.

    ``loopback`` is the loopback address of the same family, where a local client reaches a
    service listening on VALUE (``127.0.0.1`` for ``0.0.0.0``, ``::1`` for ``::``, VALUE itself
    otherwise), in URL form (IPv6 in brackets).
    """
    try:
        address = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise AnsibleFilterError(
            f"{variable} must be an IP address, IPv4 (127.0.0.1, 0.0.0.0) or IPv6 (::1, ::), not a host name; "
            f"got {value!r}"
        ) from None
    local = address
    if address.is_unspecified:
        local = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    return {
        "address": str(address),
        "version": address.version,
        "is_loopback": address.is_loopback,
        "is_unspecified": address.is_unspecified,
        "loopback": f"[{local}]" if local.version == 6 else str(local),
    }


def bind_addresses(values, variable, optional_prefix=False, exclusive_wildcards=False):
    """VALUES checked as a server's listening addresses; each as ``ip_address`` returns it, with
    ``optional`` (a ``-`` prefix, which Redis takes as "skip it if missing", with OPTIONAL_PREFIX).

    With EXCLUSIVE_WILDCARDS (RabbitMQ, which fails to boot with eaddrinuse otherwise), ``::``
    (dual-stack on Linux: every IPv6 and IPv4 address) must be the only address and ``0.0.0.0``
    the only IPv4 one.
    """
    if not isinstance(values, list) or not values:
        raise AnsibleFilterError(f"{variable} must list at least one IP address")
    parsed, refused = [], []
    for value in values:
        text = str(value).strip()
        optional = optional_prefix and text.startswith("-")
        try:
            entry = ip_address(text[1:] if optional else text, variable)
        except AnsibleFilterError:
            refused.append(text)
            continue
        parsed.append({**entry, "optional": optional})
    if refused:
        prefix = ", optionally prefixed with - (skip it if the host lacks it)" if optional_prefix else ""
        raise AnsibleFilterError(
            f"{variable} must list IP addresses, IPv4 (127.0.0.1, 0.0.0.0) or IPv6 (::1, ::), no host names{prefix}; "
            f"refused: {refused}"
        )
    if exclusive_wildcards:
        _check_wildcards(parsed, variable)
    return parsed


def _check_wildcards(parsed, variable):
    unique = {entry["address"]: entry for entry in parsed}.values()
    ipv4 = [entry for entry in unique if entry["version"] == 4]
    overlap = any(entry["is_unspecified"] and entry["version"] == 6 for entry in unique) and len(unique) > 1
    overlap = overlap or (any(entry["is_unspecified"] for entry in ipv4) and len(ipv4) > 1)
    if overlap:
        raise AnsibleFilterError(
            f"{variable} {[entry['address'] for entry in unique]} overlap: :: (every IPv6 and IPv4 address) must be "
            "the only address, and 0.0.0.0 (every IPv4 address) the only IPv4 one"
        )


class FilterModule:
    def filters(self):
        return {"ip_address": ip_address, "bind_addresses": bind_addresses}
