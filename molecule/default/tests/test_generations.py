"""Restarts follow what runs: every worker runs the generation its files name, a run is green only
when they all do, and nothing is stopped for a release or configuration that cannot load its app."""

from __future__ import annotations

import json

from conftest import (
    DEFAULT_SCENARIO_INSTANCES as INSTANCES,
)
from conftest import (
    call_task,
    current_node,
    current_slot,
    current_unit,
    main_pid,
    run_playbook,
    scenario_file,
)


def with_default(**changes: object) -> list[dict]:
    return [{**INSTANCES[0], **changes}, INSTANCES[1]]


def running_generation(host, instance: str) -> str | None:
    _unit, marker = current_slot(host, instance)
    return json.loads(host.file(marker).content_string).get("generation")


def desired_generation(host, instance: str) -> str:
    text = host.file(f"/etc/celery/worker-instances/{instance}.env").content_string
    prefix = "RELIABLE_CELERY_GENERATION="
    return next(line.removeprefix(prefix).strip("'\"") for line in text.splitlines() if line.startswith(prefix))


def converge(**variables: object):
    return run_playbook(scenario_file("converge.yml"), extra_vars=variables)


def test_every_instance_runs_the_generation_its_file_names(host) -> None:
    for instance in ("default", "reports"):
        assert running_generation(host, instance) == desired_generation(host, instance)


def test_an_app_that_cannot_load_fails_every_run_until_fixed_while_the_worker_keeps_running(host) -> None:
    unit = current_unit(host, "default")
    pid, generation = main_pid(host, unit), running_generation(host, "default")
    broken = with_default(app="reliable_celery_example.celery:nope")
    for attempt in ("first", "second, identical"):
        result = converge(celery_worker_instances=broken)
        assert result.returncode != 0, f"the {attempt} run was green on a worker that runs another generation"
        output = result.stdout + result.stderr
        assert "cannot load its Celery app" in output, output[-6000:]
        assert "has no attribute 'nope'" in output
        assert (current_unit(host, "default"), main_pid(host, unit)) == (unit, pid), "the running worker was touched"
    assert running_generation(host, "default") == generation != desired_generation(host, "default")

    fixed = converge(celery_worker_instances=with_default(environment={"FIXED": "1"}))
    assert fixed.returncode == 0, fixed.stdout[-3000:]
    assert main_pid(host, current_unit(host, "default")) != pid
    assert running_generation(host, "default") == desired_generation(host, "default")
    assert converge().returncode == 0


def test_a_drain_instance_whose_app_is_no_celery_app_stays_up(host) -> None:
    unit = current_unit(host, "default")
    pid = main_pid(host, unit)
    result = converge(celery_worker_instances=with_default(app="os:system", restart_strategy="drain"))
    assert result.returncode != 0
    assert "is not a Celery app" in result.stdout + result.stderr, (result.stdout + result.stderr)[-6000:]
    assert main_pid(host, unit) == pid, "the drain instance was stopped for an app that cannot run"

    assert converge().returncode == 0
    assert main_pid(host, unit) == pid, "the instance was restarted although it runs the desired generation"
    leftovers = host.check_output("find /run/systemd/system -mindepth 1 -maxdepth 1 -name 'celery-worker*.d'")
    assert leftovers == "", f"drop-in directories left behind: {leftovers}"


def test_a_drain_whose_new_configuration_cannot_start_brings_the_previous_generation_back(host) -> None:
    unit = current_unit(host, "default")
    generation = running_generation(host, "default")
    # The app loads (the app check passes), but the worker refuses its options and exits at once: the restart
    # fails then, not at celery_worker_ready_timeout_seconds.
    broken = with_default(restart_strategy="drain", extra_args=["--time-limit=not-a-number"])
    result = run_playbook(scenario_file("converge.yml"), extra_vars={"celery_worker_instances": broken})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ended before it reported ready" in output, output[-6000:]
    assert "Rolled back: " + unit in " ".join(output.split()), output[-6000:]
    assert host.service(unit).is_running
    assert running_generation(host, "default") == generation, "the instance does not run its previous generation"
    # The slot that ran before still serves the queue, whichever of the two it is.
    assert current_unit(host, "default") == unit
    assert call_task(host, "example.whoami", queue="celery")["node"] == current_node(host, "default")

    assert converge().returncode == 0
    assert not host.file(f"/run/systemd/system/{unit}.d/60-reliable-celery-rollback.conf").exists
    assert running_generation(host, "default") == desired_generation(host, "default")
