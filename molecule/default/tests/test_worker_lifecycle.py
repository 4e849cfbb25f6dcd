"""Releases and instances change under running workers without losing their code or tasks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import (
    DEFAULT_SCENARIO_INSTANCES,
    SLOTS,
    call_task,
    current_slot,
    current_unit,
    journal,
    main_pid,
    recap,
    run_playbook,
    scenario_file,
    wait_for,
)

INSTANCES = ["default", "reports"]


@pytest.fixture(scope="module")
def wheelhouse() -> str:
    """Wheels of Celery and of the example app at 1.0.0 and 2.0.0 (built on the controller)."""
    script = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "scripts" / "example-wheelhouse.sh"
    return subprocess.run([script], capture_output=True, text=True, check=True).stdout.strip()


def converge(host, **variables: object) -> None:
    result = run_playbook(scenario_file("converge.yml"), extra_vars=variables)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return recap(result, host.backend.get_hostname())


def current_release(host) -> str:
    return host.check_output("readlink -f /opt/celery/current")


def pids(host) -> dict[str, int]:
    return {name: main_pid(host, current_unit(host, name)) for name in INSTANCES}


def test_new_release_never_leaks_into_running_workers_and_restarts_them_when_asked(host, wheelhouse, tmp_path) -> None:
    first_release = current_release(host)
    first_pids = pids(host)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("reliable-celery-example==2.0.0\n")

    # Install release 2.0.0 from the offline wheelhouse, without restarting the workers.
    converge(
        host,
        celery_worker_app_packages=[],
        celery_worker_app_requirements_file=str(requirements),
        celery_worker_app_wheelhouse=wheelhouse,
        celery_worker_restart_on_change=False,
    )
    second_release = current_release(host)
    assert second_release != first_release
    manifest = json.loads(host.file(f"{second_release}/.release.json").content_string)
    # The release is identified by the requirements file's content and the wheels' checksums.
    assert manifest["requirements_sha256"] == hashlib.sha256(b"reliable-celery-example==2.0.0").hexdigest()
    assert len(manifest["wheels"]) == len(list(Path(wheelhouse).glob("*.whl")))
    assert pids(host) == first_pids, "workers restarted although celery_worker_restart_on_change was false"
    assert second_release in host.file("/etc/systemd/system/celery-worker@.service").content_string

    # The running worker imports the lazily loaded module now, after "current" moved on.
    ran = call_task(host, "example.code_release")
    assert ran["version"] == "1.0.0", f"a running worker loaded code from the new release: {ran}"
    assert ran["file"].startswith(first_release + "/")

    # The next restart picks the new release up.
    unit, marker = current_slot(host, "default")
    host.check_output(f"systemctl restart {unit}")
    wait_for(lambda: host.file(marker).exists, 60, f"{unit} ready")
    ran = call_task(host, "example.code_release")
    assert (ran["version"], ran["file"].startswith(second_release + "/")) == ("2.0.0", True), journal(host, unit)

    # Back to the first release (kept, so not rebuilt): the handler hands "default", which runs the
    # second release's generation, over to its other slot (the default restart_strategy). "reports"
    # never left the first release's generation: restarts follow what runs, so it is left alone.
    before, units_before = pids(host), {name: current_unit(host, name) for name in INSTANCES}
    counts = converge(host)
    assert counts["changed"] > 0
    assert current_release(host) == first_release
    after, units_after = pids(host), {name: current_unit(host, name) for name in INSTANCES}
    assert after["default"] != before["default"], f"not restarted: {before} -> {after}"
    assert units_after["default"] != units_before["default"], f"no handover: {units_after}"
    assert main_pid(host, units_before["default"]) == 0, f"the old slot {units_before['default']} still runs"
    assert (after["reports"], units_after["reports"]) == (before["reports"], units_before["reports"])
    assert call_task(host, "example.code_release")["version"] == "1.0.0"
    assert host.file(second_release).exists, "a release inside celery_worker_releases_to_keep was pruned"


def test_removed_instance_is_stopped_disabled_and_cleaned_up(host) -> None:
    instances = DEFAULT_SCENARIO_INSTANCES
    before = pids(host)
    scratch = {"name": "scratch", "queues": ["scratch"], "pool": "threads", "memory_max": "256M"}
    converge(host, celery_worker_instances=[*instances, scratch])
    assert host.service("celery-worker@scratch").is_running
    assert host.check_output("systemctl show -p MemoryMax --value celery-worker@scratch") == str(256 * 1024**2)
    assert call_task(host, "example.whoami", queue="scratch")["node"].startswith("scratch@")
    assert pids(host) == before, "adding an instance restarted the others"

    # A changed limit, then none, reach systemd (and restart scratch: the limit sets its pool's share).
    converge(host, celery_worker_instances=[*instances, {**scratch, "memory_max": "512M"}])
    assert host.check_output("systemctl show -p MemoryMax --value celery-worker@scratch") == str(512 * 1024**2)
    converge(
        host,
        celery_worker_instances=[*instances, {key: value for key, value in scratch.items() if key != "memory_max"}],
    )
    assert host.check_output("systemctl show -p MemoryMax --value celery-worker@scratch") == "infinity"
    assert not host.file("/etc/systemd/system/celery-worker@scratch.service.d/50-reliable-celery-memory.conf").exists
    assert pids(host) == before, "changing another instance's limits restarted the others"

    converge(host, celery_worker_instances=instances)
    for prefix, _suffix in SLOTS:
        service = host.service(f"{prefix}scratch")
        assert not service.is_running
        assert not service.is_enabled
    assert not host.file("/etc/celery/worker-instances/scratch.env").exists
    assert not host.file("/var/lib/celery/worker-scratch").exists
    for prefix, _suffix in SLOTS:
        assert not host.file(f"/etc/systemd/system/{prefix}scratch.service.d").exists, "its memory limits are left"
    assert pids(host) == before, "removing an instance restarted the others"
