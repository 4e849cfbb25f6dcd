# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The exact_version test: a pinned release such as 2.2.0, never latest or a range."""

from __future__ import annotations

from ansible_collections.reliable.celery.plugins.filter.celery_requirement import EXACT_VERSION


def exact_version(value):
    """Whether VALUE is an exact release (``5.7.0``, ``5.7.0rc1``, ``2.2.0.post1``)."""
    return isinstance(value, str) and bool(EXACT_VERSION.match(value))


class TestModule:
    def tests(self):
        return {"exact_version": exact_version}
