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
# pip, whose messages the refusal test reads; its wheelhouses hold no uv (the scenario's installer).
APP = {
    "celery_worker_app_packages": ["reliable-celery-example"],
    "celery_worker_restart_on_change": False,
    "celery_worker_installer": "pip",
}
# A wheel that pip on the controller compiled for its own Python (a package the app does not need).
COMPILED = "PyYAML==6.0.2"


def host_python(host) -> tuple[int, ...]:
    version = host.check_output("/usr/bin/python3 -c 'import platform; print(platform.python_version())'")
    return tuple(int(part) for part in version.split("."))


def needs_async_timeout(python: tuple[int, ...]) -> bool:
    """redis requires async-timeout on python_full_version < "3.11.3": Debian 12's 3.11.2 does,
    Debian 13's 3.13.5 and the controller's Python do not."""
    return python < (3, 11, 3)


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
    for name in ("celery-5.7.0-", "redis-", "reliable_celery_example-"):
        assert any(wheel.startswith(name) for wheel in wheels), f"no {name}* wheel in {wheels}"
    # The hosts' markers, not the controller's, chose the dependencies.
    has_async_timeout = any(wheel.startswith("async_timeout-") for wheel in wheels)
    assert has_async_timeout == needs_async_timeout(host_python(host)), wheels
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
    """The issue's case: pip on the controller (Python 3.12) resolves and builds for its own Python.
    Where the hosts' Python needs another dependency (Debian 12: async-timeout), pip refuses the
    install; a wheel compiled for the controller's Python is refused before anything changes (where
    the dependencies agree, as on Debian 13, the wheelhouse gets one). Either way nothing changes and
    the message names the way out."""
    python = host_python(host)
    assert sys.version_info[:2] != python[:2], "the controller's Python is the hosts': this case cannot happen"
    wheelhouse = tmp_path / "controller-wheelhouse"
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(wheelhouse)]
    subprocess.run([*download, "celery[redis]==5.7.0"], check=True)
    # A copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    app = shutil.copytree(PROJECT / "examples" / "example_app", tmp_path / "example_app")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheelhouse), str(app)],
        check=True,
    )  # fmt: skip
    if not needs_async_timeout(python):
        subprocess.run([*download, "--no-deps", COMPILED], check=True)
    releases_before = host.check_output("ls /opt/celery/releases")
    result = run_playbook(
        scenario_file("converge.yml"), extra_vars={**APP, "celery_worker_app_wheelhouse": str(wheelhouse)}
    )
    assert result.returncode != 0, result.stdout[-3000:]
    output = " ".join((result.stdout + result.stderr).split())
    if needs_async_timeout(python):
        assert "No matching distribution found for async-timeout" in output, result.stdout[-3000:]
        assert "the playbook reliable.celery.wheelhouse builds it on a host" in output
    else:
        compiled = next(path.name for path in wheelhouse.iterdir() if path.name.startswith("PyYAML-"))
        machine = host.check_output("uname -m")
        refusal = f"Python {'.'.join(map(str, python))} on {machine} (this host) cannot install: {compiled}"
        assert refusal in output, result.stdout[-3000:]
        assert "with the playbook reliable.celery.wheelhouse, which builds it on one of the hosts" in output
    assert host.check_output("ls /opt/celery/releases") == releases_before
