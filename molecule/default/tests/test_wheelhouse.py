"""playbooks/wheelhouse.yml builds a wheelhouse that fits the hosts' Python; one built with the
controller's Python is refused with a message that says why and what to use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import run_playbook, scenario_file

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
APP = {"celery_worker_app_packages": ["reliable-celery-example"], "celery_worker_restart_on_change": False}


def build_on_host(wheelhouse: Path) -> subprocess.CompletedProcess:
    return run_playbook(
        PROJECT / "playbooks" / "wheelhouse.yml",
        "-e",
        f"@{PROJECT / 'examples' / 'wheelhouse-vars.yml'}",
        extra_vars={"wheelhouse_hosts": "all", "wheelhouse_dir": str(wheelhouse)},
    )


def test_wheelhouse_built_on_a_host_installs_there_with_its_marker_dependencies(host, tmp_path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    built = build_on_host(wheelhouse)
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-2000:]
    wheels = sorted(path.name for path in wheelhouse.iterdir())
    # Debian 12's Python 3.11.2: redis needs async-timeout (python_full_version < "3.11.3").
    assert host.check_output("/usr/bin/python3 -c 'import platform; print(platform.python_version())'") == "3.11.2"
    for name in ("async_timeout-", "celery-5.7.0-", "redis-", "reliable_celery_example-"):
        assert any(wheel.startswith(name) for wheel in wheels), f"no {name}* wheel in {wheels}"
    assert host.run("ls -d /tmp/reliable-celery-wheelhouse-*").rc != 0, "the build directory was left on the host"

    installed = run_playbook(
        scenario_file("converge.yml"), extra_vars={**APP, "celery_worker_app_wheelhouse": str(wheelhouse)}
    )
    assert installed.returncode == 0, installed.stdout[-5000:]

    # A second build gives the same directory (wheels of an earlier build that this one did not make go).
    (wheelhouse / "stale-1.0-py3-none-any.whl").write_text("")
    rebuilt = build_on_host(wheelhouse)
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:]
    assert sorted(path.name for path in wheelhouse.iterdir()) == wheels

    restored = run_playbook(scenario_file("converge.yml"))
    assert restored.returncode == 0, restored.stdout[-5000:]


def test_wheelhouse_built_with_the_controllers_python_is_refused_with_the_way_out(host, tmp_path) -> None:
    """The issue's case: pip on the controller (Python 3.12) leaves out async-timeout."""
    assert sys.version_info[:2] != (3, 11), "the controller's Python is the hosts': this case cannot happen"
    wheelhouse = tmp_path / "controller-wheelhouse"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(wheelhouse),
         "celery[redis]==5.7.0"],
        check=True,
    )  # fmt: skip
    # A copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    app = shutil.copytree(PROJECT / "examples" / "example_app", tmp_path / "example_app")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheelhouse), str(app)],
        check=True,
    )  # fmt: skip
    releases_before = host.check_output("ls /opt/celery/releases")
    result = run_playbook(
        scenario_file("converge.yml"), extra_vars={**APP, "celery_worker_app_wheelhouse": str(wheelhouse)}
    )
    assert result.returncode != 0, result.stdout[-3000:]
    output = " ".join((result.stdout + result.stderr).split())
    assert "No matching distribution found for async-timeout" in output, result.stdout[-3000:]
    assert "the playbook reliable.celery.wheelhouse builds it on a host" in output
    assert host.check_output("ls /opt/celery/releases") == releases_before
