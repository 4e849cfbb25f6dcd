from __future__ import annotations

from ansible_collections.reliable.celery.plugins.filter.flower_environment import flower_conf, flower_environment


def test_options_become_flower_variables_as_flower_reads_them() -> None:
    options = {"max_tasks": 10000, "natural_time": True, "tasks_columns": ["name", "uuid"], "logging": "info"}
    assert flower_environment(options) == {
        "FLOWER_MAX_TASKS": 10000,
        "FLOWER_NATURAL_TIME": "true",
        "FLOWER_TASKS_COLUMNS": "name,uuid",
        "FLOWER_LOGGING": "info",
    }


def test_the_conf_file_is_python_that_yields_the_users_unchanged() -> None:
    users = [{"username": "ops", "password": "pa\"ss\\wörd'x"}, {"username": "admin", "password": "second-one-12"}]
    conf = flower_conf(users)
    namespace: dict = {}
    exec(conf, namespace)  # noqa: S102 - what Flower does with its --conf file
    assert namespace["basic_auth"] == ["ops:pa\"ss\\wörd'x", "admin:second-one-12"]
    assert conf.endswith("\n")
