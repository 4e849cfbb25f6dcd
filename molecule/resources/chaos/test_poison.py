"""Poison containment on both brokers (docs/delivery.md#poison-tasks): a task that kills its pool
process, or its whole worker, runs celery_worker_max_unfinished_runs (3) times, then ends FAILURE
with its message in the dead-letter queue; playbooks/dead_letters.yml lists it and sends it back.
Tasks sent meanwhile all succeed."""

from __future__ import annotations

import json

import pytest
from conftest import in_worker_environment, run_playbook, send_tasks, wait_for
from test_chaos import INSTANCE, MAX_UNFINISHED_RUNS, REPO, WORKERS, Fleet, task_runs

# Sends a task and waits for its result in one process: with rpc:// only the sender gets it.
SEND_AND_WAIT = """
import json, sys
from reliable_celery_app import app
name, args, timeout = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
result = app.send_task(name, args=args)
outcome = result.get(timeout=timeout, propagate=False)
print(json.dumps({"id": result.id, "state": result.state, "outcome": repr(outcome)}))
"""


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet()


def send_and_wait(fleet: Fleet, name: str, args: list, timeout: float) -> dict:
    argv = ["/opt/celery/current/bin/python", "-c", SEND_AND_WAIT, name, json.dumps(args), str(timeout)]
    result = fleet.workers[WORKERS[0]].run(in_worker_environment(INSTANCE, argv))
    assert result.rc == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def starts(fleet: Fleet, task_id: str) -> int:
    return len(task_runs([event for event in fleet.events() if event["id"] == task_id]))


def dead_letters(**extra_vars) -> list[dict]:
    """What playbooks/dead_letters.yml prints: the dead letters listed, or those sent back."""
    result = run_playbook(REPO / "playbooks" / "dead_letters.yml", extra_vars=extra_vars or None, json_output=True)
    assert result.returncode == 0, result.stdout[-4000:]
    [shown] = [
        outcome["msg"]
        for play in json.loads(result.stdout)["plays"]
        for task in play["tasks"]
        if task["task"]["name"].endswith("Show the dead letters (listed or sent back)")
        for outcome in task["hosts"].values()
        if "msg" in outcome
    ]
    return shown


def assert_contained(fleet: Fleet, outcome: dict) -> None:
    assert outcome["state"] == "FAILURE", outcome
    assert f"ended unfinished {MAX_UNFINISHED_RUNS} time(s)" in outcome["outcome"], outcome
    wait_for(lambda: starts(fleet, outcome["id"]) >= MAX_UNFINISHED_RUNS, 30, "the task's runs to be recorded")
    assert starts(fleet, outcome["id"]) == MAX_UNFINISHED_RUNS


def test_a_task_that_kills_its_pool_process_runs_three_times_then_is_a_dead_letter_and_replays(fleet: Fleet) -> None:
    others = send_tasks(fleet.workers[WORKERS[1]], [("example.add", [n, n], "") for n in range(40)])
    outcome = send_and_wait(fleet, "example.crash", ["pool"], 120)
    assert_contained(fleet, outcome)
    wait_for(
        lambda: {e["id"] for e in fleet.events() if e["event"] == "end" and e["state"] == "SUCCESS"}.issuperset(others),
        120,
        "the tasks sent meanwhile to succeed",
    )

    [letter] = [letter for letter in dead_letters() if letter["id"] == outcome["id"]]
    assert letter["task"] == "example.crash"
    assert letter["unfinished_runs"] == MAX_UNFINISHED_RUNS

    assert [letter["id"] for letter in dead_letters(celery_worker_dead_letters_replay=outcome["id"])] == [outcome["id"]]
    # Sent back with its count reset: it runs three more times and is a dead letter again.
    wait_for(lambda: starts(fleet, outcome["id"]) >= 2 * MAX_UNFINISHED_RUNS, 120, "the replayed task to run")
    wait_for(
        lambda: any(letter["id"] == outcome["id"] for letter in dead_letters()), 60, "the replayed task's dead letter"
    )
    assert starts(fleet, outcome["id"]) == 2 * MAX_UNFINISHED_RUNS


def test_a_task_that_kills_its_worker_runs_three_times_then_is_a_dead_letter(fleet: Fleet) -> None:
    outcome = send_and_wait(fleet, "example.crash", ["worker"], 180)
    assert_contained(fleet, outcome)
    assert any(letter["id"] == outcome["id"] for letter in dead_letters())
    for name in WORKERS:
        fleet.wait_worker_ready(name)
