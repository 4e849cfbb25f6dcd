from __future__ import annotations

from ansible_collections.reliable.celery.plugins.filter.restart_selection import restart_selection


def loop(*changed: tuple[str, bool]) -> dict:
    return {"results": [{"item": {"name": name}, "changed": flag} for name, flag in changed]}


def test_a_shared_change_restarts_every_instance_but_those_just_started() -> None:
    started = loop(("a", False), ("b", True), ("c", False))
    assert restart_selection(["a", "b", "c"], True, loop(), started) == ["a", "c"]


def test_otherwise_only_instances_whose_own_file_changed() -> None:
    files = loop(("a", False), ("b", True), ("c", True))
    assert restart_selection(["a", "b", "c"], False, files, loop(("c", True))) == ["b"]


def test_skipped_loops_select_nothing_of_their_own() -> None:
    assert restart_selection(["a"], False, {"skipped": True}, None) == []
