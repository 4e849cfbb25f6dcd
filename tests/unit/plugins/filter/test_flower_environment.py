from __future__ import annotations

from ansible_collections.reliable.celery.plugins.filter.flower_environment import flower_environment


def test_options_become_flower_variables_as_flower_reads_them() -> None:
    options = {"max_tasks": 10000, "natural_time": True, "tasks_columns": ["name", "uuid"], "logging": "info"}
    assert flower_environment(options) == {
        "FLOWER_MAX_TASKS": 10000,
        "FLOWER_NATURAL_TIME": "true",
        "FLOWER_TASKS_COLUMNS": "name,uuid",
        "FLOWER_LOGGING": "info",
    }
