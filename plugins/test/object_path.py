# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The object_path test: PACKAGE.MODULE:ATTRIBUTE, as Celery's -A and the wrapper import it."""

from __future__ import annotations

from ansible_collections.reliable.celery.plugins.filter.worker_instances import APP


def object_path(value):
    """Whether VALUE names an object as ``package.module:attribute``."""
    return isinstance(value, str) and bool(APP.match(value))


class TestModule:
    def tests(self):
        return {"object_path": object_path}
