# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The beat_input_problems filter: what in celery_beat's variables and play the role refuses before
it changes anything, beyond the argument spec and the filters that raise their own errors; each
problem a message naming the variable to change."""

from __future__ import annotations

from ansible_collections.reliable.celery.plugins.plugin_utils.problems import app_source_problem, problems
from ansible_collections.reliable.celery.plugins.test.object_path import object_path

# Set by the role from its own variables (the schedule file is in the StateDirectory).
REFUSED_SETTINGS = ("broker_url", "result_backend", "beat_schedule_filename", "beat_scheduler")


def _hosts_problem(found):
    hosts = found["play_hosts"]
    if len(hosts) == 1:
        return None
    return (
        f"celery_beat runs one beat per schedule: this play would run it on {len(hosts)} hosts ({', '.join(hosts)}),"
        " and every periodic task would be sent once per beat. Apply the role in a play that targets exactly one host"
        " (playbooks/site.yml: the group named by celery_site_beat_group, default beat)."
    )


def _app_path_problem(found):
    if object_path(found["app"]):
        return None
    return f"celery_beat_app must be PACKAGE.MODULE:ATTRIBUTE (for example proj.celery:app), got '{found['app']}'."


def _scheduler_problem(found):
    if object_path(found["scheduler"]):
        return None
    return (
        "celery_beat_scheduler must be PACKAGE.MODULE:CLASS (for example celery.beat:PersistentScheduler),"
        f" got '{found['scheduler']}'."
    )


def _settings_problem(found):
    if not set(found["settings"]) & set(REFUSED_SETTINGS):
        return None
    return (
        "celery_beat_settings may not set broker_url, result_backend, beat_schedule_filename or beat_scheduler (use"
        " celery_beat_broker_url, celery_beat_result_backend and celery_beat_scheduler; the schedule file is in the"
        " StateDirectory)."
    )


def beat_input_problems(found):
    """The problems of beat's play and variables, FOUND as the role gathers them (tasks/preflight.yml): a play of
    more than one host, the app and where it comes from, the scheduler, settings the role sets itself. An empty
    list: none."""
    checks = (
        _hosts_problem,
        _app_path_problem,
        lambda found: app_source_problem("celery_beat", found),
        _scheduler_problem,
        _settings_problem,
    )
    return problems("beat_input_problems", "beat's variables", found, checks)


class FilterModule:
    def filters(self):
        return {"beat_input_problems": beat_input_problems}
