"""A starting worker runs a canary task through its own node's queue before it consumes its queues
(celery_worker_start_canary_task): a release that cannot run it never takes a message, and a handover to it
fails with the old slot consuming."""

from __future__ import annotations

import json
import re

from conftest import (
    SLOTS,
    current_node,
    current_slot,
    journal,
    main_pid,
    run_playbook,
    scenario_file,
    send_tasks,
    task_results,
)

RECEIVED = re.compile(r"Task (\S+)\[([^\]]+)\] received")


def test_a_ready_worker_ran_its_start_canary_first(host) -> None:
    unit, marker = current_slot(host, "default")
    record = json.loads(host.file(marker).content_string)
    assert isinstance(record["start_canary_seconds"], float), record
    log = journal(host, unit, lines=400)
    assert "start canary reliable_celery.start_canary passed in" in log, log


def test_a_release_whose_canary_fails_never_consumes_and_the_old_slot_goes_on(host) -> None:
    old_unit, _marker = current_slot(host, "default")
    old_pid, old_node = main_pid(host, old_unit), current_node(host, "default")
    new_unit = next(f"{prefix}default.service" for prefix, _suffix in SLOTS if f"{prefix}default.service" != old_unit)
    # Both pool processes of the old slot busy for 30 s: the queue holds the short tasks meanwhile, for the new slot
    # to take if it consumed its queues before its canary ran.
    busy = send_tasks(host, [("example.sleep", [30], "celery")] * 2)
    waiting = send_tasks(host, [("example.whoami", [], "celery")] * 6)

    since = host.check_output("date +%s")
    result = run_playbook(scenario_file("converge.yml"), extra_vars={"celery_worker_start_canary_task": "example.fail"})

    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-6000:]
    # The loop of the restart task fails per instance: "failed: [HOST] (item=default (handover))".
    assert f"failed: [{host.backend.get_hostname()}] (item=default " in output, output[-6000:]
    assert f"{new_unit} (main pid" in output, output[-6000:]
    canary_error = (
        "ended before it reported ready: its start canary failed: example.fail failed (RuntimeError: example failure)"
    )
    assert canary_error in output, output[-6000:]
    assert "keeps running untouched" in output, output[-6000:]
    assert (current_slot(host, "default")[0], main_pid(host, old_unit)) == (old_unit, old_pid)
    assert main_pid(host, new_unit) == 0, journal(host, new_unit)
    received = RECEIVED.findall(host.check_output(f"journalctl --no-pager -u {new_unit} --since @{since}"))
    assert received, "the new slot received not even its canary"
    assert all(task_id.startswith("start-canary-") for _name, task_id in received), received
    assert {ran["node"] for ran in task_results(host, waiting, timeout=90)} == {old_node}
    task_results(host, busy, timeout=90)

    assert host.service(new_unit).is_enabled is False
    assert host.run(f"systemctl is-failed --quiet {new_unit}").rc != 0, "the stopped slot is left failed"

    # The app's canary back: the old slot runs what is asked again, and stays.
    result = run_playbook(scenario_file("converge.yml"))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert (current_slot(host, "default")[0], main_pid(host, old_unit)) == (old_unit, old_pid)
