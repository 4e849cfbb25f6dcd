# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restart_selection filter: which worker instances run another generation than the desired one."""

from __future__ import annotations


def restart_selection(names, started):
    """NAMES (in order) whose running worker runs a stale generation, as the start task
    (STARTED, the registered loop of celery_worker_restart with state=started) found them.
    An instance that the task has just started already runs the desired generation."""
    stale = {result["item"]["name"] for result in (started or {}).get("results", []) if result.get("stale")}
    return [name for name in names if name in stale]


class FilterModule:
    def filters(self):
        return {"restart_selection": restart_selection}
