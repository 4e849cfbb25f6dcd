"""App code that another role put on the host (celery_worker_app_path): one directory per version
runs as a release of its own and hands over like a new wheel; a directory changed in place, or a
path through a symbolic link, is refused before anything changes unless declared mutable."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import call_task, current_unit, main_pid, recap, run_playbook, scenario_file

APP_ROOT = "/srv/example"
INSTALL_DIR = "/opt/celery"
SOURCE = "/usr/local/src/reliable-celery-example/src"  # the example app's source, which prepare copies to the host
INSTANCES = ["default", "reports"]


def converge(**variables: object) -> subprocess.CompletedProcess:
    """The scenario's converge with the app from a directory instead of its wheel."""
    return run_playbook(scenario_file("converge.yml"), extra_vars={"celery_worker_app_packages": [], **variables})


def converged(**variables: object) -> subprocess.CompletedProcess:
    result = converge(**variables)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result


def refused(message: str, **variables: object) -> None:
    result = converge(**variables)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, "the converge was not refused"
    assert " ".join(message.split()) in output, output[-3000:]


def deployed(host, version: str) -> str:
    """The example app's code as a team's deploy role leaves a version: its own directory, root's."""
    directory = f"{APP_ROOT}/releases/{version}"
    host.check_output(f"mkdir -p {directory} && cp -r {SOURCE}/. {directory}/")
    host.check_output(
        f"sed -i 's/^VERSION = .*/VERSION = \"{version}\"/' {directory}/reliable_celery_example/release.py"
    )
    return directory


def pids(host) -> dict[str, int]:
    return {name: main_pid(host, current_unit(host, name)) for name in INSTANCES}


def current_release(host) -> str:
    return host.check_output(f"readlink -f {INSTALL_DIR}/current")


@pytest.fixture(scope="module", autouse=True)
def back_to_the_wheel():
    """The other tests expect the scenario's own release (the app as a wheel)."""
    yield
    result = run_playbook(scenario_file("converge.yml"))
    assert result.returncode == 0, result.stdout[-6000:]


def test_a_directory_per_version_is_a_release_and_a_new_one_hands_over(host) -> None:
    v1 = deployed(host, "v1")
    converged(celery_worker_app_path=v1)
    answer = call_task(host, "example.code_release")
    assert (answer["version"], answer["file"]) == ("v1", f"{v1}/reliable_celery_example/release.py")
    release = current_release(host)
    manifest = json.loads(host.file(f"{release}/.release.json").content_string)
    assert manifest["app_path"] == v1
    assert len(manifest["app_tree_sha256"]) == 64
    assert recap(converge(celery_worker_app_path=v1), host.backend.get_hostname())["changed"] == 0

    before = pids(host)
    v2 = deployed(host, "v2")
    converged(celery_worker_app_path=v2)
    after = pids(host)
    assert all(after[name] != before[name] for name in INSTANCES), f"not handed over: {before} -> {after}"
    answer = call_task(host, "example.code_release")
    assert (answer["version"], answer["file"]) == ("v2", f"{v2}/reliable_celery_example/release.py")
    # The earlier release, kept for a rollback, still imports v1.
    pth = host.check_output(f"cat {release}/lib/python3*/site-packages/reliable_celery_app_path.pth")
    assert pth == v1


def test_a_directory_changed_in_place_or_reached_through_a_link_is_refused_unless_mutable(host) -> None:
    v3 = deployed(host, "v3")
    converged(celery_worker_app_path=v3)
    before = pids(host)
    host.check_output(f"echo 'CHANGED = True' >> {v3}/reliable_celery_example/release.py")
    refused(f"celery_worker_app_path: the code in {v3} changed", celery_worker_app_path=v3)
    host.check_output(f"ln -sfn {v3} {APP_ROOT}/current")
    refused(
        f"{APP_ROOT}/current goes through the symbolic link {APP_ROOT}/current",
        celery_worker_app_path=f"{APP_ROOT}/current",
    )
    assert pids(host) == before, "a refused converge restarted a worker"

    converged(celery_worker_app_path=f"{APP_ROOT}/current", celery_worker_app_path_mutable=True)
    assert call_task(host, "example.code_release")["version"] == "v3"
    host.check_output(f"sed -i 's/^VERSION = .*/VERSION = \"v3-edited\"/' {v3}/reliable_celery_example/release.py")
    converged(celery_worker_app_path=f"{APP_ROOT}/current", celery_worker_app_path_mutable=True)
    assert call_task(host, "example.code_release")["version"] == "v3-edited", "a change did not build a new release"
