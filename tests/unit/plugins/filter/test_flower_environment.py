from __future__ import annotations

import sys
import types

import pytest
from ansible_collections.reliable.celery.plugins.filter.flower_environment import flower_conf, flower_environment


def test_options_become_flower_variables_as_flower_reads_them() -> None:
    options = {"max_tasks": 10000, "natural_time": True, "tasks_columns": ["name", "uuid"], "logging": "info"}
    assert flower_environment(options) == {
        "FLOWER_MAX_TASKS": 10000,
        "FLOWER_NATURAL_TIME": "true",
        "FLOWER_TASKS_COLUMNS": "name,uuid",
        "FLOWER_LOGGING": "info",
    }


class Metrics:
    """Flower 2.2's flower.views.monitor.Metrics: its GET asks for no login."""

    async def get(self) -> None:
        pass


def authenticated(method):
    """tornado.web.authenticated, recording what it wraps."""

    def wrapper(*args, **kwargs):
        return method(*args, **kwargs)

    wrapper.wrapped = method
    return wrapper


@pytest.fixture
def flower_modules(monkeypatch: pytest.MonkeyPatch) -> type:
    """Stand-ins for the two modules the conf file imports (the unit tests do not install Flower;
    molecule/site checks the real one)."""
    monitor = types.ModuleType("flower.views.monitor")
    metrics = type("Metrics", (Metrics,), {})
    monitor.Metrics = metrics
    web = types.ModuleType("tornado.web")
    web.authenticated = authenticated
    modules = {"flower": types.ModuleType("flower"), "flower.views": types.ModuleType("flower.views")}
    modules |= {"flower.views.monitor": monitor, "tornado": types.ModuleType("tornado"), "tornado.web": web}
    modules["flower"].views = modules["flower.views"]
    modules["flower.views"].monitor = monitor
    modules["tornado"].web = web
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return metrics


def test_the_conf_file_is_python_that_yields_the_users_unchanged(flower_modules: type) -> None:
    users = [{"username": "ops", "password": "pa\"ss\\wörd'x"}, {"username": "admin", "password": "second-one-12"}]
    conf = flower_conf(users)
    namespace: dict = {}
    exec(conf, namespace)  # noqa: S102 - what Flower does with its --conf file
    assert namespace["basic_auth"] == ["ops:pa\"ss\\wörd'x", "admin:second-one-12"]
    assert conf.endswith("\n")


def test_the_conf_file_puts_the_metrics_behind_the_login(flower_modules: type) -> None:
    exec(flower_conf([{"username": "ops", "password": "second-one-12"}]), {})  # noqa: S102 - as Flower does
    assert flower_modules.get.wrapped is Metrics.get
