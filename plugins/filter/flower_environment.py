# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The flower_environment filter: Flower options as the FLOWER_* variables Flower reads."""

from __future__ import annotations


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


class FilterModule:
    def filters(self):
        return {"flower_environment": flower_environment}
