"""Secrets stay in root-only systemd credentials; re-runs and check mode change and restart nothing."""

from __future__ import annotations

import hashlib

import pytest
from conftest import (
    MANAGED_PATHS,
    call_task,
    celery,
    current_unit,
    fingerprint,
    main_pid,
    recap,
    run_playbook,
    scenario_file,
)

SECRET = "Broker-Secret-7f3a-0d2c9e"  # noqa: S105 - the test broker's password, looked for where it must not be
APP_SECRET = "App-Token-51d0c7"  # noqa: S105 - in celery_worker_environment (converge.yml)
APP_CREDENTIAL = "App-Credential-3e9b1f"  # in celery_worker_app_credentials (converge.yml)
INSTANCES = ["default", "reports"]


@pytest.fixture
def main_pids(host) -> dict[str, int]:
    return {name: main_pid(host, current_unit(host, name)) for name in INSTANCES}


def test_secrets_are_in_the_root_only_credential_files_only(host) -> None:
    credentials = "/etc/celery/credentials/worker"
    for path, mode in (
        ("/etc/celery/credentials", 0o700),
        (credentials, 0o700),
        (f"{credentials}/broker_url", 0o600),
        (f"{credentials}/api_token", 0o600),
    ):
        assert (host.file(path).user, host.file(path).group, host.file(path).mode) == ("root", "root", mode), path
    for secret in (SECRET, APP_CREDENTIAL):
        unit_files = host.run(f"grep -rl -- {secret} /etc/systemd /run/systemd /lib/systemd").stdout
        assert unit_files == "", f"a secret is in unit files: {unit_files}"
    found = host.run(f"grep -rl -- {SECRET} /etc/celery /opt/celery /var/lib/celery").stdout.split()
    assert sorted(found) == [f"{credentials}/broker_url", f"{credentials}/result_backend"]
    found = host.run(f"grep -rl -- {APP_CREDENTIAL} /etc/celery /opt/celery /var/lib/celery").stdout.split()
    assert found == [f"{credentials}/api_token"]


def test_the_app_reads_its_credential_from_the_credentials_directory(host) -> None:
    assert (
        call_task(host, "example.credential_digest", ["api_token"])
        == hashlib.sha256(APP_CREDENTIAL.encode()).hexdigest()
    )


def test_secret_is_in_no_process_environment_argument_unit_property_or_journal(host) -> None:
    """Main processes and pool children alike: the URLs reach the worker as credentials only."""
    pids = host.check_output("pgrep -u celery").split()
    assert len(pids) >= 4, f"expected the main processes and their pool children, got {pids}"
    for pid in pids:
        environ = host.run(f"cat /proc/{pid}/environ")
        assert environ.rc == 0, f"cannot read {pid}'s environment"
        assert "RELIABLE_CELERY_SETTINGS" in environ.stdout, f"{pid} is not a worker process"
        for secret in (SECRET, APP_CREDENTIAL):
            assert secret not in environ.stdout, f"a secret is in the environment of pid {pid}"
    units = host.check_output("systemctl list-units --all --plain --no-legend 'celery-worker*' | cut -d' ' -f1").split()
    for secret in (SECRET, APP_CREDENTIAL):
        assert secret not in host.check_output("ps -eo args --no-headers")
        for unit in units:
            assert secret not in host.check_output(f"systemctl show {unit}") + host.check_output(
                f"systemctl cat {unit}"
            )
        assert secret not in host.check_output("journalctl --no-pager -u 'celery-worker*'")


@pytest.mark.parametrize("command", [["inspect", "conf"], ["inspect", "stats"]])
def test_secret_is_not_in_what_celery_reports(host, command: list[str]) -> None:
    result = celery(host, "default", *command, "--timeout", "5")
    assert result.rc == 0, result.stderr
    assert "broker" in result.stdout, result.stdout[-2000:]
    assert SECRET not in result.stdout + result.stderr


def test_verbose_rerun_shows_no_secret_changes_nothing_and_restarts_nothing(host, main_pids) -> None:
    result = run_playbook(scenario_file("converge.yml"), "-v")
    assert result.returncode == 0, result.stdout[-5000:]
    assert SECRET not in result.stdout + result.stderr
    assert APP_SECRET not in result.stdout + result.stderr
    assert APP_CREDENTIAL not in result.stdout + result.stderr
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
