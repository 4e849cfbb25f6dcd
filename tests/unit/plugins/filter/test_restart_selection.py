from __future__ import annotations

from ansible_collections.reliable.celery.plugins.filter.restart_selection import restart_selection


def loop(*stale: tuple[str, bool]) -> dict:
    return {"results": [{"item": {"name": name}, "changed": flag, "stale": flag} for name, flag in stale]}


def test_instances_running_a_stale_generation_in_the_order_of_names() -> None:
    started = loop(("c", True), ("a", True), ("b", False))
    assert restart_selection(["a", "b", "c"], started) == ["a", "c"]


def test_an_instance_just_started_runs_the_desired_generation() -> None:
    started = {"results": [{"item": {"name": "a"}, "changed": True, "stale": False}]}
    assert restart_selection(["a"], started) == []


def test_a_skipped_start_task_selects_nothing() -> None:
    assert restart_selection(["a"], {"skipped": True, "results": []}) == []
    assert restart_selection(["a"], None) == []
