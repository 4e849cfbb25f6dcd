# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restart_selection filter: which worker instances a run's changes restart."""

from __future__ import annotations


def _changed_names(results):
    """The instance names of a registered loop's changed items (``item.name``)."""
    return {result["item"]["name"] for result in (results or {}).get("results", []) if result.get("changed")}


def restart_selection(names, shared_changed, instance_files, started):
    """NAMES (in order) that need a restart.

    All of them when something they share changed (release, environment, settings, unit),
    otherwise those whose own instance file changed (INSTANCE_FILES, the registered loop);
    never one that this run has just started (STARTED, the registered loop of the start task):
    it already runs the new configuration.
    """
    changed = set(names) if shared_changed else _changed_names(instance_files)
    just_started = _changed_names(started)
    return [name for name in names if name in changed and name not in just_started]


class FilterModule:
    def filters(self):
        return {"restart_selection": restart_selection}
