"""The graceful restart under load: nothing lost, nothing killed, nothing run twice."""

from __future__ import annotations

import re
import time

import pytest
from conftest import (
    journal,
    main_pid,
    run_playbook,
    scenario_file,
    send_tasks,
    starts_and_ends,
    task_events,
    unit_properties,
    wait_for,
)

UNIT = "celery-worker@default.service"
PASSWORD = "Broker-Secret-7f3a-0d2c9e"  # noqa: S105 - the test broker's password


def now(host) -> str:
    return host.check_output("date +%s")


def journal_since(host, since: str) -> str:
    return host.check_output(f"journalctl --no-pager -o cat -u {UNIT} --since @{since}")


def wait_started(host, task_id: str) -> None:
    wait_for(lambda: starts_and_ends(task_events(host), [task_id])[task_id]["start"], 60, f"task {task_id} to start")


def wait_all_ended(host, task_ids: list[str], timeout: float) -> dict[str, dict[str, list[dict]]]:
    def all_ended() -> dict | None:
        by_id = starts_and_ends(task_events(host), task_ids)
        return by_id if all(events["end"] for events in by_id.values()) else None

    return wait_for(all_ended, timeout, f"{len(task_ids)} tasks to end", interval=0.5)


@pytest.fixture(autouse=True)
def ready_worker(host) -> int:
    """Each test starts from a worker that is up and ready (the one before may have restarted it)."""
    return wait_active_with_new_pid(host, old_pid=0)


def wait_active_with_new_pid(host, old_pid: int) -> int:
    def new_pid() -> int | None:
        properties = unit_properties(host, UNIT, "ActiveState", "MainPID")
        pid = int(properties["MainPID"])
        return pid if properties["ActiveState"] == "active" and pid not in (0, old_pid) else None

    pid = wait_for(new_pid, 60, f"{UNIT} active with a new main pid")
    marker = "cat /run/celery/worker-default/ready"
    wait_for(lambda: f'"pid": {pid},' in host.run(marker).stdout, 60, f"{UNIT} pid {pid} ready")
    return pid


def module_result(output: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(\w+_(?:pid|seconds)|killed|signalled|was_running): (\S+)$", output, re.MULTILINE))


def test_handler_restart_under_load_loses_nothing_kills_nothing_runs_nothing_twice(host) -> None:
    since = now(host)
    old_pid = main_pid(host, UNIT)
    (long_id,) = send_tasks(host, [("example.sleep", [60], "")])
    wait_started(host, long_id)
    short_ids = send_tasks(host, [("example.sleep", [0.2], "")] * 240)

    # A setting changes: the role's handler restarts the worker through the module.
    changed_setting = {"celery_worker_settings": {"task_time_limit": 600 + int(time.time()) % 3600}}
    result = run_playbook(scenario_file("converge.yml"), extra_vars=changed_setting)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "HANDLER [reliable.celery.celery_worker : Restart changed celery workers gracefully]" in result.stdout
    new_pid = main_pid(host, UNIT)
    assert new_pid != old_pid

    by_id = wait_all_ended(host, [long_id, *short_ids], timeout=240)
    long_task = by_id[long_id]
    assert len(long_task["start"]) == 1, f"the long task started {len(long_task['start'])} times"
    assert [end["state"] for end in long_task["end"]] == ["SUCCESS"]
    assert long_task["end"][0]["pid"] in {e["pid"] for e in long_task["start"]}
    assert long_task["start"][0]["t"] < long_task["end"][0]["t"] - 59
    lost = [task_id for task_id in short_ids if not by_id[task_id]["end"]]
    twice = [task_id for task_id, events in by_id.items() if len(events["start"]) > 1]
    failed = [task_id for task_id, events in by_id.items() if any(e["state"] != "SUCCESS" for e in events["end"])]
    assert (lost, twice, failed) == ([], [], []), f"lost {lost}, ran twice {twice}, failed {failed}"

    log = journal_since(host, since)
    assert "SIGKILL" not in log, log
    assert "WorkerLostError" not in log, log
    assert unit_properties(host, UNIT, "ActiveState")["ActiveState"] == "active"


def test_drain_timeout_shorter_than_the_running_task_fails_clearly_and_kills_nothing(host) -> None:
    since = now(host)
    old_pid = main_pid(host, UNIT)
    (long_id,) = send_tasks(host, [("example.sleep", [20], "")])
    wait_started(host, long_id)

    result = run_playbook(scenario_file("restart_module.yml"), extra_vars={"restart_drain_timeout": 4})
    assert result.returncode != 0, result.stdout[-3000:]
    message = " ".join((result.stdout + result.stderr).split())  # the callback folds long messages
    expected = rf"{UNIT} \(main pid {old_pid}\) is still finishing its tasks \d+ s after SIGTERM \(drain_timeout=4"
    assert re.search(expected, message), message
    assert "Nothing was killed" in message

    by_id = wait_all_ended(host, [long_id], timeout=60)
    assert [end["state"] for end in by_id[long_id]["end"]] == ["SUCCESS"]
    assert len(by_id[long_id]["start"]) == 1
    assert "SIGKILL" not in journal_since(host, since)
    # systemd's Restart= brings the worker back once it has drained.
    wait_active_with_new_pid(host, old_pid)


def test_kill_after_kills_what_is_left_and_keeps_the_killed_task_for_redelivery(host) -> None:
    """Only when asked: kill_after SIGKILLs what still runs. With late acks the killed task is
    not lost: Redis keeps its message unacked for redelivery after the visibility timeout."""
    old_pid = main_pid(host, UNIT)
    (long_id,) = send_tasks(host, [("example.sleep", [25], "")])
    wait_started(host, long_id)
    extra = {"restart_drain_timeout": 60, "restart_kill_after": 3}
    result = run_playbook(scenario_file("restart_module.yml"), "-v", extra_vars=extra)
    assert result.returncode == 0, result.stdout[-3000:]
    timings = module_result(result.stdout)
    assert timings["killed"] == "true"
    assert 3 <= float(timings["drain_seconds"]) < 25
    assert int(timings["new_pid"]) != old_pid
    assert not starts_and_ends(task_events(host), [long_id])[long_id]["end"], "the killed task ended"
    unacked = host.check_output(f"REDISCLI_AUTH={PASSWORD} redis-cli --no-auth-warning -n 0 hvals unacked")
    assert long_id in unacked, "the killed task's message is gone from Redis: it would be lost"


def test_ping_readiness_and_timings(host) -> None:
    old_pid = main_pid(host, UNIT)
    result = run_playbook(scenario_file("restart_module.yml"), "-v", extra_vars={"restart_readiness": "ping"})
    assert result.returncode == 0, result.stdout[-3000:]
    timings = module_result(result.stdout)
    print(f"module restart (ping readiness), idle worker: {timings}")
    assert int(timings["old_pid"]) == old_pid
    assert int(timings["new_pid"]) == main_pid(host, UNIT) != old_pid
    assert timings["killed"] == "false"
    assert timings["signalled"] == "true"


def test_control_plain_restart_with_systemd_default_killmode_kills_the_running_task(host) -> None:
    """Why the module and KillMode=mixed exist: systemd's default KillMode=control-group sends
    SIGTERM to the pool children too; the running task dies and, with the reliable settings,
    runs again from the start. If a future Celery stops that, this test says so."""
    host.check_output(
        f"mkdir -p /run/systemd/system/{UNIT}.d && "
        f"printf '[Service]\\nKillMode=control-group\\n' > /run/systemd/system/{UNIT}.d/control.conf && "
        "systemctl daemon-reload"
    )
    try:
        assert unit_properties(host, UNIT, "KillMode")["KillMode"] == "control-group"
        (long_id,) = send_tasks(host, [("example.sleep", [10], "")])
        wait_started(host, long_id)
        host.check_output(f"systemctl restart {UNIT}")
        by_id = wait_all_ended(host, [long_id], timeout=90)
        starts, ends = by_id[long_id]["start"], by_id[long_id]["end"]
        assert len(starts) >= 2 or any(end["state"] != "SUCCESS" for end in ends), (
            f"plain restart with KillMode=control-group no longer kills the running task: {by_id[long_id]}"
        )
    finally:
        old_pid = main_pid(host, UNIT)
        host.check_output(f"rm -rf /run/systemd/system/{UNIT}.d && systemctl daemon-reload && systemctl restart {UNIT}")
        wait_active_with_new_pid(host, old_pid)
        assert unit_properties(host, UNIT, "KillMode")["KillMode"] == "mixed", journal(host, UNIT)
