# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The worker_input_problems filter: what in celery_worker's variables the role refuses before it
changes anything, beyond the argument spec and the filters that raise their own errors; each
problem a message naming the variable to change."""

from __future__ import annotations

from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.reliable.celery.plugins.plugin_utils.problems import app_source_problem, problems

# Set by the role (celery_worker_broker_url, celery_worker_result_backend, the per-instance state db,
# celery_worker_redis_leases, celery_worker_max_unfinished_runs): never in celery_worker_settings.
REFUSED_SETTINGS = (
    "broker_url",
    "result_backend",
    "worker_state_db",
    "reliable_celery_leases",
    "reliable_celery_poison",
    "reliable_celery_start_canary",
)


def _number(value):
    """A setting as Ansible's int filter reads it: 0 for what is no number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def _dead_letter_problem(found):
    queue = found["dead_letter_queue"]
    consumed = {name for instance in found["instances"] for name in instance["queues"]}
    if isinstance(queue, str) and queue and queue not in consumed:
        return None
    return (
        "celery_worker_dead_letter_queue must be a queue name that no instance of celery_worker_instances consumes"
        f" (their dead letters would run again), got '{queue}'."
    )


def _settings_problem(found):
    """Settings that would lose or duplicate tasks."""
    effective = found["effective_settings"]
    prefetch = _number(effective.get("worker_prefetch_multiplier"))
    broker_options = effective.get("broker_transport_options") or {}
    backend_options = effective.get("result_backend_transport_options") or {}
    safe = (
        boolean(effective.get("task_acks_late"), strict=False)
        and boolean(effective.get("task_reject_on_worker_lost"), strict=False)
        and prefetch >= 1
        and (prefetch == 1 or boolean(found["allow_prefetch_with_acks_late"], strict=False))
        and (
            not found["broker_is_redis"]
            or _number(broker_options.get("visibility_timeout")) >= found["redis_minimum_seconds"]
        )
        and (
            not found["backend_is_redis"]
            or _number(backend_options.get("visibility_timeout")) >= found["visibility_timeout_seconds"]
        )
        and not set(found["settings"]) & set(REFUSED_SETTINGS)
    )
    if safe:
        return None
    if found["leases"]:
        minimum = f"{found['redis_minimum_seconds']} s with celery_worker_redis_leases"
    else:
        minimum = (
            "celery_worker_max_task_seconds + celery_worker_max_eta_seconds + celery_worker_timeout_margin_seconds ="
            f" {found['visibility_timeout_seconds']} s without celery_worker_redis_leases"
        )
    return (
        "celery_worker_settings would lose or duplicate tasks: task_acks_late and task_reject_on_worker_lost must stay"
        " true (otherwise a crash or restart loses the running task); worker_prefetch_multiplier must be 1 unless"
        f" celery_worker_allow_prefetch_with_acks_late is true; a Redis visibility_timeout must be at least {minimum}"
        f" (a shorter one re-delivers tasks that are still running); {', '.join(REFUSED_SETTINGS)} are set by the"
        " role (celery_worker_broker_url, celery_worker_result_backend, per-instance state db,"
        " celery_worker_redis_leases, celery_worker_max_unfinished_runs) and may not be in celery_worker_settings."
    )


def _start_canary_problem(found):
    """The start canary must be decided before celery_worker_restart gives up waiting for the worker."""
    task, seconds, ready_timeout = found["start_canary_task"], found["start_canary_seconds"], found["ready_timeout"]
    if not seconds:
        return None
    if not isinstance(task, str) or not task.strip():
        return f"celery_worker_start_canary_task must name a task of the app (a non-empty string), got '{task}'."
    if seconds >= ready_timeout:
        return (
            f"celery_worker_start_canary_seconds must be 0 (no start canary) or less than"
            f" celery_worker_ready_timeout_seconds ({ready_timeout}), got {seconds}."
        )
    return None


def worker_input_problems(found):
    """The problems of the worker's variables, FOUND as the role gathers them (tasks/preflight.yml): where the app
    comes from, the dead-letter queue, the start canary and the reliable-delivery settings. An empty list: none."""
    return problems(
        "worker_input_problems",
        "the worker's variables",
        found,
        (
            lambda found: app_source_problem("celery_worker", found),
            _dead_letter_problem,
            _start_canary_problem,
            _settings_problem,
        ),
    )


class FilterModule:
    def filters(self):
        return {"worker_input_problems": worker_input_problems}
