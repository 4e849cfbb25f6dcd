"""The test host is a real systemd host with the signal semantics the collection relies on."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from conftest import journal, run_playbook, scenario_file, scenario_host, unit_properties, wait_for

PROBE = "signal-probe.service"


@pytest.fixture
def probe_pids(host) -> tuple[int, int]:
    """(main pid, child pid) of the running probe, as systemd and the probe itself report them."""
    wait_for(lambda: unit_properties(host, PROBE, "ActiveState")["ActiveState"] == "active", 30, f"{PROBE} active")
    main_pid = int(unit_properties(host, PROBE, "MainPID")["MainPID"])

    def pids_written_by_current_main() -> tuple[int, int] | None:
        written = host.run("cat /run/signal-probe/main.pid").stdout.split()
        return (int(written[0]), int(written[1])) if written and int(written[0]) == main_pid else None

    return wait_for(pids_written_by_current_main, 30, f"{PROBE} main pid {main_pid} to record its child")


def test_systemd_is_pid_1_and_the_system_is_running(host) -> None:
    assert host.process.get(pid=1).comm == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state == "running", host.run("systemctl --failed --no-pager").stdout


def test_a_type_simple_unit_runs_its_binary_as_main_pid(host, probe_pids) -> None:
    main_pid, child_pid = probe_pids
    properties = unit_properties(host, PROBE, "Type", "KillMode", "MainPID", "SubState")
    assert properties["Type"] == "simple"
    assert properties["KillMode"] == "mixed"
    assert properties["SubState"] == "running", journal(host, PROBE)
    assert int(properties["MainPID"]) == main_pid
    assert "/usr/local/bin/signal-probe" in host.process.get(pid=main_pid).args
    assert host.process.get(pid=child_pid).ppid == main_pid


def test_sigterm_to_main_pid_reaches_only_that_process_and_systemd_restarts_it(host, probe_pids) -> None:
    main_pid, child_pid = probe_pids
    host.check_output(f"kill -TERM {main_pid}")

    report_file = f"/run/signal-probe/report-{main_pid}.json"
    wait_for(lambda: host.file(report_file).exists, 30, f"the probe's report {report_file}")
    report = json.loads(host.file(report_file).content_string)
    assert report["main_signals"] == ["SIGTERM"]
    assert report["child_pid"] == child_pid
    assert report["child_alive"], f"the child died while the main process drained: {report}"
    assert report["child_signals"] == [], f"SIGTERM to the main pid reached the child: {report}"

    def restarted_main_pid() -> int | None:
        properties = unit_properties(host, PROBE, "MainPID", "ActiveState")
        pid = int(properties["MainPID"])
        return pid if properties["ActiveState"] == "active" and pid not in (0, main_pid) else None

    new_pid = wait_for(restarted_main_pid, 30, f"systemd to restart {PROBE}")
    assert new_pid != main_pid, journal(host, PROBE)


def test_the_exposure_gate_fails_a_unit_above_its_threshold(host) -> None:
    """The gate the scenarios apply to the collection's units (--threshold) can fail."""
    result = host.run(f"systemd-analyze security --no-pager --threshold=100 {PROBE}")
    assert result.rc == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    below = round(float(match.group(1)) * 10) - 1
    assert host.run(f"systemd-analyze security --no-pager --threshold={below} {PROBE}").rc != 0


CREDENTIAL_UNIT = """[Service]
Type=oneshot
User=nobody
LoadCredential=secret:/root/credential-probe-secret
ProtectSystem=strict
PrivateTmp=true
NoNewPrivileges=true
ExecStart=/bin/sh -c 'head -c1 "$CREDENTIALS_DIRECTORY/secret" > /dev/null && echo delivered'
"""


def test_load_credential_delivers_a_root_only_file_to_the_service_user_alone(host) -> None:
    """As on a real host: the image makes / a shared mount, which systemd's credential set-up needs."""
    secret = "credential-probe-value"  # noqa: S105 - a test value
    unit = "credential-probe.service"
    host.check_output(f"umask 077 && printf %s {secret} > /root/credential-probe-secret")
    host.check_output(f"cat > /etc/systemd/system/{unit} <<'EOF'\n{CREDENTIAL_UNIT}EOF\nsystemctl daemon-reload")
    try:
        result = host.run(f"systemctl start {unit}")
        output = journal(host, unit)
        assert result.rc == 0, output
        assert "delivered" in output, output
        assert secret not in output
        assert host.run(f"systemctl show -p Environment {unit}").stdout.strip() == "Environment="
    finally:
        host.run(f"rm -f /etc/systemd/system/{unit} /root/credential-probe-secret && systemctl daemon-reload")


# What each test host runs, by the suite its name ends with: version, name, brokers supported there.
SUITES = {
    "bookworm": ("12", "Debian 12 (bookworm)", "redis rabbitmq"),
    "trixie": ("13", "Debian 13 (trixie)", "redis valkey rabbitmq"),
}
OS_RELEASE_OF_ANOTHER_DEBIAN = (
    'PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nNAME="Debian GNU/Linux"\nVERSION_ID="11"\n'
    'VERSION="11 (bullseye)"\nVERSION_CODENAME=bullseye\nID=debian\n'
)
# What a role run would create first: service users, directories, units, packages.
ROLE_PATHS = " ".join(
    (
        "/etc/passwd /etc/group /etc/celery /opt/celery /var/lib/celery",
        "/etc/systemd/system /etc/rabbitmq /var/lib/dpkg/status",
    )
)


def suite_of(host) -> str:
    return host.backend.get_hostname().rsplit("-", 1)[-1]


def apply_role(host, role: str | None = None):
    extra_vars = {} if role is None else {"platform_check_role": role}
    return run_playbook(scenario_file("platform.yml"), "--limit", host.backend.get_hostname(), extra_vars=extra_vars)


def paths_digest(host) -> str:
    return host.run(f"ls -laR {ROLE_PATHS} 2>&1 | sha256sum").stdout


def test_each_test_host_runs_its_suite(host) -> None:
    os_release = host.file("/etc/os-release").content_string
    assert f"VERSION_CODENAME={suite_of(host)}" in os_release
    assert f'VERSION_ID="{SUITES[suite_of(host)][0]}"' in os_release


def test_the_roles_platform_check_takes_the_host(host) -> None:
    result = apply_role(host)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _version, name, brokers = SUITES[suite_of(host)]
    assert f"platform: {name}, brokers: {brokers}" in result.stdout


def test_a_host_on_another_debian_is_refused_before_any_change(host) -> None:
    before = paths_digest(host)
    host.check_output("cp --no-dereference --preserve=all /etc/os-release /etc/debian_version /root/")
    try:
        os_release = shlex.quote(OS_RELEASE_OF_ANOTHER_DEBIAN)
        host.check_output(f"rm /etc/os-release && printf %s {os_release} > /etc/os-release")
        host.check_output("echo 11.11 > /etc/debian_version")
        result = apply_role(host, "celery_worker")
    finally:
        host.check_output("cp --no-dereference --preserve=all /root/os-release /root/debian_version /etc/")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    name = host.backend.get_hostname()
    refusal = f"{name} runs Debian 11.11 (bullseye); the collection supports Debian 12, Debian 13."
    assert refusal in output, output[-3000:]
    assert paths_digest(host) == before


def test_valkey_is_refused_on_bookworm_before_any_change() -> None:
    """Debian 12 does not ship Valkey: the broker role says so instead of installing something else."""
    host = scenario_host("rc-testhost-bookworm")
    before = paths_digest(host)
    result = apply_role(host, "celery_broker")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    refusal = (
        "celery_broker_type valkey is not supported on Debian 12 (bookworm) (rc-testhost-bookworm): "
        "there it must be one of redis, rabbitmq."
    )
    assert refusal in output, output[-3000:]
    assert paths_digest(host) == before


# Imports a fresh module from a zip as Ansible's modules are imported, replaces the code the cache
# stored for it by code that answers 2, and imports the same source from another zip: prints the
# two answers.
ZIP_IMPORT_PROBE = """
import hashlib, marshal, os, subprocess, sys, tempfile, uuid, zipfile
source = f"ANSWER = 1  # {uuid.uuid4()}\\n".encode()
directory = tempfile.mkdtemp()

def answer(name):
    path = os.path.join(directory, name)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("zip_import_probe.py", source)
    program = f"import sys; sys.path.insert(0, {path!r}); import zip_import_probe; print(zip_import_probe.ANSWER)"
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout.strip()

first = answer("first.zip")
stored = f"/var/cache/testhost-zip-code/{hashlib.sha256(source).hexdigest()}.{sys.implementation.cache_tag}"
with open(stored, "wb") as file:
    marshal.dump(compile("ANSWER = 2\\n", "zip_import_probe.py", "exec"), file)
print(first, answer("second.zip"))
"""


def test_ansible_modules_run_their_compiled_code_from_the_cache(host) -> None:
    cache = host.file("/var/cache/testhost-zip-code")
    assert cache.is_directory, "no Ansible module run has stored its code"
    assert (cache.user, cache.mode) == ("root", 0o700)
    assert host.check_output(f"/usr/bin/python3 -c {shlex.quote(ZIP_IMPORT_PROBE)}").split() == ["1", "2"]
