"""Numbers given as strings on the command line (`-e NAME=40` passes a string) are the same numbers:
the same configuration, nothing changed, nothing restarted; a value that is no number is refused
naming the variable."""

from __future__ import annotations

from conftest import recap, run_playbook, scenario_file

# molecule/default/converge.yml's values and the roles' defaults, each as `-e NAME=VALUE`.
AS_STRINGS = {
    "celery_worker_max_task_seconds": "240",
    "celery_worker_max_eta_seconds": "0",
    "celery_worker_timeout_margin_seconds": "60",
    "celery_worker_redis_restore_interval_seconds": "5",
    "celery_worker_restart_seconds": "1",
    "celery_worker_watchdog_seconds": "20",
    "celery_worker_redis_lease_seconds": "60",
    "celery_worker_max_unfinished_runs": "3",
    "celery_worker_ready_timeout_seconds": "120",
    "celery_worker_start_canary_seconds": "30",
    "celery_worker_releases_to_keep": "3",
}


def extra_vars(values: dict[str, str]) -> list[str]:
    return [option for name, value in values.items() for option in ("-e", f"{name}={value}")]


def test_numbers_as_strings_give_the_same_configuration(host) -> None:
    result = run_playbook(scenario_file("converge.yml"), "--check", *extra_vars(AS_STRINGS))
    assert result.returncode == 0, result.stdout[-4000:]
    assert recap(result, host.backend.get_hostname())["changed"] == 0, result.stdout[-4000:]


def test_a_number_that_is_no_number_is_refused_naming_the_variable(host) -> None:
    negative = extra_vars({"celery_worker_restart_seconds": "-5"})
    result = run_playbook(scenario_file("converge.yml"), "--check", *negative)
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())  # under molecule the failure goes to stderr
    assert "celery_worker_restart_seconds must be a whole number >= 0, got '-5'" in output, output[-3000:]
    assert "TypeError" not in output


def test_a_watchdog_below_its_minimum_is_refused_naming_the_variable(host) -> None:
    result = run_playbook(
        scenario_file("converge.yml"), "--check", *extra_vars({"celery_worker_watchdog_seconds": "5"})
    )
    assert result.returncode != 0
    output = " ".join((result.stdout + result.stderr).split())
    assert "celery_worker_watchdog_seconds must be 0 (off) or a whole number >= 10, got '5'" in output, output[-3000:]
