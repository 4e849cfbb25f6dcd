"""Release builds: credentials in install inputs stay root-only and out of every output; a failed
build leaves nothing; pruning keeps the running and the last complete releases, never a partial
one; versions and package specifiers are checked before anything changes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import RELEASES_DIR, current_unit, fingerprint, main_pid, recap, run_playbook, scenario_file

INSTALL_DIR = "/opt/celery"
SPEC_TOKEN = "Spec-Token-5d6e0a"  # noqa: S105 - a token in a package URL, looked for where it must not be
INDEX_TOKEN = "Index-Token-9a8b7c"  # noqa: S105 - a token in the requirements file
HTTP_PORT = 8765
INSTANCES = ["default", "reports"]


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """Wheels of Celery and of the example app at 1.0.0 and 2.0.0 (built on the controller)."""
    script = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "scripts" / "example-wheelhouse.sh"
    return Path(subprocess.run([script], capture_output=True, text=True, check=True).stdout.strip())


def converge(*options: str, **variables: object) -> subprocess.CompletedProcess:
    return run_playbook(scenario_file("converge.yml"), *options, extra_vars=variables)


def converged(host, *options: str, **variables: object) -> subprocess.CompletedProcess:
    result = converge(*options, **variables)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result


def shows(result: subprocess.CompletedProcess, message: str) -> bool:
    """Whether Ansible's output has MESSAGE (long messages are folded over lines)."""
    return " ".join(message.split()) in " ".join((result.stdout + result.stderr).split())


def releases(host) -> set[str]:
    return set(host.check_output(f"find {RELEASES_DIR} -mindepth 1 -maxdepth 1 -type d").split())


def current_release(host) -> str:
    return host.check_output(f"readlink -f {INSTALL_DIR}/current")


def pids(host) -> dict[str, int]:
    return {name: main_pid(host, current_unit(host, name)) for name in INSTANCES}


def files_containing(host, needles: tuple[str, ...], *, user: str = "root") -> list[str]:
    """Files anywhere on the host (but /proc and /sys) that USER can read and that hold a needle.
    The needles go through stdin: runuser logs its command line to the journal, which is searched."""
    command = f"runuser -u {user} -- grep -rlsF -f - / --exclude-dir=proc --exclude-dir=sys"
    return host.run(f"printf '%s\\n' {' '.join(needles)} | {command}").stdout.split()


@pytest.fixture
def served_app_wheel(host, wheelhouse: Path):
    """The example app's 2.0.0 wheel over HTTP on the host: a package URL that carries a token."""
    wheel = "reliable_celery_example-2.0.0-py3-none-any.whl"
    host.check_output("mkdir -p /srv/wheels")
    target = f"{host.backend.get_hostname()}:/srv/wheels/"
    subprocess.run(["docker", "cp", str(wheelhouse / wheel), target], check=True)
    host.check_output(
        "systemd-run --collect --unit rc-test-wheels -p WorkingDirectory=/srv/wheels "
        f"python3 -m http.server --bind 127.0.0.1 {HTTP_PORT}"
    )
    yield f"reliable-celery-example @ http://ci:{SPEC_TOKEN}@127.0.0.1:{HTTP_PORT}/{wheel}"
    host.run("systemctl stop rc-test-wheels; rm -rf /srv/wheels")


@pytest.fixture
def process_sampler(host):
    """Samples every process's command line (10 per second) while the test runs; yields the log's path."""
    log = "/root/rc-test-ps.log"
    host.check_output(
        "systemd-run --collect --unit rc-test-ps /bin/sh -c "
        f"'while :; do ps -eo args --no-headers >> {log}; sleep 0.1; done'"
    )
    yield log
    host.run(f"systemctl stop rc-test-ps; rm -f {log}")


def test_credentials_in_install_inputs_never_reach_output_argv_or_readable_files(
    host, wheelhouse, served_app_wheel, process_sampler, tmp_path
) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"--extra-index-url https://ci:{INDEX_TOKEN}@pypi.invalid/simple\n")
    requirements.chmod(0o600)
    before = current_release(host)

    result = converged(
        host,
        "-v",
        celery_worker_app_packages=[served_app_wheel],
        celery_worker_app_requirements_file=str(requirements),
        celery_worker_app_wheelhouse=str(wheelhouse),
        celery_worker_restart_on_change=False,
    )
    host.check_output("systemctl stop rc-test-ps")
    release = current_release(host)
    assert release != before, "no new release was built: the test proves nothing"

    output = result.stdout + result.stderr
    assert SPEC_TOKEN not in output, "a token in a package specifier reached Ansible's -v output"
    assert INDEX_TOKEN not in output, "the requirements file's token reached Ansible's -v output"
    processes = host.file(process_sampler).content_string
    installs = [line for line in processes.splitlines() if " install " in line and release in line]
    assert installs, "the sampler never saw the installer run: the test proves nothing"
    assert SPEC_TOKEN not in processes, "a token in a package specifier was in the installer's command line"
    assert INDEX_TOKEN not in processes
    readable = files_containing(host, (SPEC_TOKEN, INDEX_TOKEN), user="nobody")
    assert readable == [], f"world-readable files hold an install token: {readable}"
    left = files_containing(host, (SPEC_TOKEN, INDEX_TOKEN))
    assert left == [], f"files still hold an install token after the build: {left}"
    assert host.run(f"ls -d {INSTALL_DIR}/.build-*").rc != 0, "the build directory was left behind"
    manifest = json.loads(host.file(f"{release}/.release.json").content_string)
    assert set(manifest) == {
        "python",
        "celery",
        "kombu",
        "packages_sha256",
        "requirements_sha256",
        "wheels",
        "wrapper_sha256",
    }
    # The app came from the token URL: the release runs 2.0.0.
    show_version = "import importlib.metadata as m; print(m.version('reliable-celery-example'))"
    assert host.check_output(f'{release}/bin/python -c "{show_version}"') == "2.0.0"


def test_failed_build_leaves_nothing_and_changes_nothing_that_runs(host, wheelhouse) -> None:
    releases_before, current_before, pids_before = releases(host), current_release(host), pids(host)
    result = converge(
        celery_worker_app_packages=["reliable-celery-example==9.9.9"],
        celery_worker_app_wheelhouse=str(wheelhouse),
    )
    assert result.returncode != 0, result.stdout[-3000:]
    assert shows(result, "failed at 'Report a failed install' and was removed"), result.stdout[-3000:]
    assert shows(result, "uv install failed"), result.stdout[-3000:]
    assert shows(result, "there is no version of reliable-celery-example==9.9.9"), result.stdout[-3000:]
    assert releases(host) == releases_before, "the failed build left a release directory"
    assert host.run(f"ls -d {INSTALL_DIR}/.build-*").rc != 0, "the failed build left its build directory"
    assert current_release(host) == current_before
    assert pids(host) == pids_before


def test_pruning_keeps_the_running_and_last_complete_releases_never_a_partial_one(host, wheelhouse, tmp_path) -> None:
    """The issue's case: a partial release (newest directory) was kept while the last good one was pruned."""
    converged(host)
    running = current_release(host)
    # The most recently completed release before the build (the running one, or one a test built later).
    last_complete = max(releases(host), key=lambda path: float(host.check_output(f"stat -c %Y {path}/.release.json")))
    # What an interrupted build and an earlier version of the role leave behind.
    partial = f"{RELEASES_DIR}/0123456789abcdef"
    stale_build = f"{INSTALL_DIR}/.build-0123456789abcdef"
    host.check_output(f"mkdir -p {partial}/bin {stale_build} && touch {partial}/bin/python {stale_build}/install.txt")
    host.check_output(f"echo '--index-url https://x@y/simple' > {running}/app-requirements.txt")

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("reliable-celery-example==2.0.0\n")
    converged(
        host,
        celery_worker_app_packages=[],
        celery_worker_app_requirements_file=str(requirements),
        celery_worker_app_wheelhouse=str(wheelhouse),
        celery_worker_releases_to_keep=2,
        celery_worker_restart_on_change=False,
    )
    new = current_release(host)
    # Kept: the new current release, the one the workers still run, the last one completed before it.
    assert releases(host) == {new, running, last_complete}
    assert not host.file(stale_build).exists
    assert not host.file(f"{running}/app-requirements.txt").exists

    # Back to the scenario's release for the tests that follow.
    converged(host)
    assert current_release(host) == running


def test_the_installer_is_not_part_of_the_release(host) -> None:
    """The scenario builds with uv; pip names the same release, so switching builds and restarts nothing."""
    before, pids_before = current_release(host), pids(host)
    result = converged(host, celery_worker_installer="pip")
    assert recap(result, host.backend.get_hostname())["changed"] == 0, result.stdout[-3000:]
    assert (current_release(host), pids(host)) == (before, pids_before)
    assert host.file(f"{INSTALL_DIR}/installers/uv-0.13.9/bin/uv").exists, "the scenario's release was not built by uv"
    # What uv leaves in a release: a lock file anyone may write (0666) and the marks of a cache directory.
    left = [name for name in (".lock", "CACHEDIR.TAG", ".gitignore") if host.file(f"{before}/{name}").exists]
    assert left == [], f"uv's files left in the release {before}"


def test_old_versions_of_uv_are_removed_and_nothing_restarts(host) -> None:
    old = f"{INSTALL_DIR}/installers/uv-0.0.1"
    host.run_test(f"mkdir -p {old}/bin && touch {old}/bin/uv")
    pids_before = pids(host)
    result = converged(host)
    assert recap(result, host.backend.get_hostname())["changed"] == 1, result.stdout[-3000:]
    assert not host.file(old).exists
    assert host.file(f"{INSTALL_DIR}/installers/uv-0.13.9/bin/uv").exists
    assert pids(host) == pids_before


WORKER_VALID = {
    "test_role": "reliable.celery.celery_worker",
    "celery_worker_app": "reliable_celery_example.celery:app",
    "celery_worker_app_packages": ["/usr/local/src/reliable-celery-example"],
    "celery_worker_broker_url": "redis://:Broker-Secret-7f3a-0d2c9e@127.0.0.1:6379/0",
    "celery_worker_instances": [{"name": "default", "queues": ["celery"]}],
}
BEAT_VALID = {
    "test_role": "reliable.celery.celery_beat",
    "celery_beat_app": "reliable_celery_example.celery:app",
    "celery_beat_app_packages": ["/usr/local/src/reliable-celery-example"],
    "celery_beat_broker_url": "redis://:Broker-Secret-7f3a-0d2c9e@127.0.0.1:6379/0",
}
FLOWER_VALID = {
    "test_role": "reliable.celery.celery_flower",
    "celery_flower_broker_url": "redis://:Broker-Secret-7f3a-0d2c9e@127.0.0.1:6379/0",
}


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        pytest.param(
            {**WORKER_VALID, "celery_worker_celery_version": "latest"},
            "celery_worker_celery_version must be an exact version such as 5.7.0, got 'latest'",
            id="worker latest",
        ),
        pytest.param(
            {**BEAT_VALID, "celery_beat_celery_version": ">=5.7"},
            "celery_beat_celery_version must be an exact version",
            id="beat range",
        ),
        pytest.param(
            {**FLOWER_VALID, "celery_flower_celery_version": "latest"},
            "celery_flower_celery_version must be an exact version",
            id="flower latest",
        ),
        pytest.param(
            {
                **WORKER_VALID,
                "celery_worker_app_packages": ["app==1.0", f"--index-url=https://ci:{SPEC_TOKEN}@evil/simple"],
            },
            "celery_worker_app_packages[1] starts with '-'",
            id="worker package that is a pip option",
        ),
        pytest.param(
            {**BEAT_VALID, "celery_beat_app_packages": ["app==1.0 --hash=sha256:00"]},
            "celery_beat_app_packages[0] contains ' -' or ' #'",
            id="beat package with an option",
        ),
    ],
)
def test_versions_and_package_specifiers_are_checked_before_anything_changes(host, variables, message) -> None:
    before = fingerprint(host)
    result = run_playbook(scenario_file("role_only.yml"), extra_vars=variables)
    assert result.returncode != 0
    assert shows(result, message), result.stdout[-3000:]
    assert SPEC_TOKEN not in result.stdout + result.stderr
    assert fingerprint(host) == before, "the host changed before the refusal"
    assert recap(result, host.backend.get_hostname())["changed"] == 0
