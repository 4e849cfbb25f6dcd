"""Secrets stay in the 0640 environment file; re-runs and check mode change and restart nothing."""

from __future__ import annotations

import pytest
from conftest import MANAGED_PATHS, current_unit, fingerprint, main_pid, recap, run_playbook, scenario_file

SECRET = "Broker-Secret-7f3a-0d2c9e"  # noqa: S105 - the test broker's password, looked for where it must not be
INSTANCES = ["default", "reports"]


@pytest.fixture
def main_pids(host) -> dict[str, int]:
    return {name: main_pid(host, current_unit(host, name)) for name in INSTANCES}


def test_secret_is_in_the_environment_file_only(host) -> None:
    assert host.file("/etc/celery/worker.env").contains(SECRET)
    assert host.run("runuser -u nobody -- cat /etc/celery/worker.env").rc != 0
    unit_files = host.run(f"grep -rl -- {SECRET} /etc/systemd /run/systemd /lib/systemd").stdout
    assert unit_files == "", f"the broker password is in unit files: {unit_files}"
    settings = host.run(f"grep -rl -- {SECRET} /etc/celery /opt/celery /var/lib/celery").stdout.split()
    assert settings == ["/etc/celery/worker.env"]


def test_secret_is_not_in_process_arguments(host) -> None:
    assert SECRET not in host.check_output("ps -eo args --no-headers")


def test_verbose_rerun_shows_no_secret_changes_nothing_and_restarts_nothing(host, main_pids) -> None:
    result = run_playbook(scenario_file("converge.yml"), "-v")
    assert result.returncode == 0, result.stdout[-5000:]
    assert SECRET not in result.stdout + result.stderr
    assert recap(result, host.backend.get_hostname())["changed"] == 0, result.stdout[-5000:]
    assert {name: main_pid(host, current_unit(host, name)) for name in INSTANCES} == main_pids


def test_check_mode_changes_nothing_and_restarts_nothing(host, main_pids) -> None:
    settings_before = host.file("/etc/celery/worker-settings.json").content_string
    result = run_playbook(scenario_file("converge.yml"), "--check", extra_vars={"celery_worker_max_task_seconds": 900})
    assert result.returncode == 0, result.stdout[-5000:]
    assert SECRET not in result.stdout + result.stderr
    assert recap(result, host.backend.get_hostname())["changed"] > 0, "check mode should report the pending change"
    assert host.file("/etc/celery/worker-settings.json").content_string == settings_before
    assert {name: main_pid(host, current_unit(host, name)) for name in INSTANCES} == main_pids

    result = run_playbook(scenario_file("converge.yml"), "--check")
    assert result.returncode == 0, result.stdout[-5000:]
    assert recap(result, host.backend.get_hostname())["changed"] == 0, result.stdout[-5000:]


def test_check_mode_of_a_first_install_changes_nothing(host, main_pids) -> None:
    """Check mode where nothing of this install exists yet: it reports the changes, makes none."""
    fresh = {
        "test_role": "reliable.celery.celery_worker",
        "celery_worker_app": "reliable_celery_example.celery:app",
        "celery_worker_app_packages": ["/usr/local/src/reliable-celery-example"],
        "celery_worker_broker_url": f"redis://:{SECRET}@127.0.0.1:6379/0",
        "celery_worker_user": "celery-check",
        "celery_worker_group": "celery-check",
        "celery_worker_home": "/var/lib/celery-check",
        "celery_worker_install_dir": "/opt/celery-check",
        "celery_worker_config_dir": "/etc/celery-check",
        "celery_worker_instances": [{"name": "check-only", "queues": ["check"]}],
    }
    before = fingerprint(host)
    result = run_playbook(scenario_file("role_only.yml"), "--check", extra_vars=fresh)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert recap(result, host.backend.get_hostname())["changed"] > 0
    assert fingerprint(host) == before
    for path in ("/opt/celery-check", "/etc/celery-check", "/var/lib/celery-check"):
        assert not host.file(path).exists, f"check mode created {path}"
    assert not host.user("celery-check").exists
    assert {name: main_pid(host, current_unit(host, name)) for name in INSTANCES} == main_pids


FIRST_INSTALLS = {
    "beat": (
        {
            "test_role": "reliable.celery.celery_beat",
            "celery_beat_app": "reliable_celery_example.celery:app",
            "celery_beat_app_packages": ["/usr/local/src/reliable-celery-example"],
            "celery_beat_broker_url": f"redis://:{SECRET}@127.0.0.1:6379/0",
        },
        ["/opt/celery-beat", "/etc/celery/beat.env", "/etc/systemd/system/celery-beat.service"],
    ),
    "flower": (
        {
            "test_role": "reliable.celery.celery_flower",
            "celery_flower_broker_url": f"redis://:{SECRET}@127.0.0.1:6379/0",
            "celery_flower_basic_auth": [{"username": "ops", "password": f"{SECRET}-flower"}],
        },
        ["/opt/celery-flower", "/etc/celery/flower.env", "/etc/systemd/system/celery-flower.service"],
    ),
}


@pytest.mark.parametrize("role", FIRST_INSTALLS)
def test_check_mode_of_a_first_beat_or_flower_install_changes_nothing(host, main_pids, role: str) -> None:
    variables, paths = FIRST_INSTALLS[role]
    before = fingerprint(host, MANAGED_PATHS + " /opt")
    result = run_playbook(scenario_file("role_only.yml"), "--check", extra_vars=variables)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert recap(result, host.backend.get_hostname())["changed"] > 0
    assert SECRET not in result.stdout + result.stderr
    assert fingerprint(host, MANAGED_PATHS + " /opt") == before
    for path in paths:
        assert not host.file(path).exists, f"check mode created {path}"
    assert {name: main_pid(host, current_unit(host, name)) for name in INSTANCES} == main_pids
