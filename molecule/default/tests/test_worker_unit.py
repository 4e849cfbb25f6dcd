"""The worker unit, its hardening and the files the role installs."""

from __future__ import annotations

import functools
import json
import re
import time

import pytest
from conftest import (
    SLOTS,
    call_task,
    current_slot,
    hang_until_replaced,
    journal,
    main_pid,
    record_figures,
    unit_properties,
    wait_for,
)

INSTANCES = ["default", "reports"]


def slot_suffix(unit: str) -> str:
    return next(suffix for prefix, suffix in SLOTS if unit.startswith(prefix))


@pytest.mark.parametrize("instance", INSTANCES)
def test_unit_properties(host, instance: str) -> None:
    unit, _marker = current_slot(host, instance)
    expected = {
        "Type": "simple",
        "KillMode": "mixed",
        "KillSignal": "15",
        "OOMPolicy": "continue",
        # celery_worker_stop_timeout_seconds; the worker extends it while a task is within its time limit
        "TimeoutStopUSec": "30s",
        "Restart": "always",
        "RestartUSec": "0",  # a ready worker restarts at once; one that cannot start pauses first
        "WatchdogUSec": "20s",  # celery_worker_watchdog_seconds
        "NotifyAccess": "main",
        "StartLimitIntervalUSec": "0",
        "User": "celery",
        "Group": "celery",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0027",
        "StateDirectory": f"celery/worker-{instance}",
        "RuntimeDirectory": f"celery/worker-{instance}{slot_suffix(unit)}",
        "ActiveState": "active",
        "SubState": "running",
        "UnitFileState": "enabled",
    }
    properties = unit_properties(host, unit, *expected)
    assert properties == expected, journal(host, unit)


# converge.yml's memory_high and memory_max, in bytes; "default" has none.
MEMORY_LIMITS = {
    "default": {"MemoryHigh": "infinity", "MemoryMax": "infinity"},
    "reports": {"MemoryHigh": str(768 * 1024**2), "MemoryMax": str(1024**3)},
}


@pytest.mark.parametrize("instance", INSTANCES)
def test_both_slots_have_the_instances_memory_limits(host, instance: str) -> None:
    """Set, but not enforced in these containers (cgroup v1: 300 MB allocated under MemoryMax=40M)."""
    for prefix, _suffix in SLOTS:
        unit = f"{prefix}{instance}.service"
        assert unit_properties(host, unit, "MemoryHigh", "MemoryMax") == MEMORY_LIMITS[instance], unit
        drop_in = host.file(f"/etc/systemd/system/{unit}.d/50-reliable-celery-memory.conf")
        assert drop_in.exists == (instance == "reports"), drop_in.path


def test_a_pool_process_past_its_share_of_the_memory_limit_is_replaced_after_its_task(host) -> None:
    """reports: concurrency 1 and MemoryHigh 768M, so each of its two processes (pool and main) gets 384 MiB
    (--max-memory-per-child=393216 KiB). A task that leaks 450 MB ends normally; then Celery replaces its pool
    process, and the worker itself runs on."""
    unit, _marker = current_slot(host, "reports")
    main = main_pid(host, unit)
    assert "--max-memory-per-child=393216" in host.file(f"/proc/{main}/cmdline").content_string.split("\0")
    leaked = call_task(host, "example.leak", [450], queue="reports")
    after = call_task(host, "example.add", [1, 2], queue="reports")
    assert leaked["leaked_megabytes"] == 450
    assert after["pid"] != leaked["pid"], "the leaking pool process was not replaced"
    assert main_pid(host, unit) == main, journal(host, unit)


@pytest.mark.parametrize("instance", INSTANCES)
def test_exactly_one_slot_runs_and_is_enabled_for_boot(host, instance: str) -> None:
    current, _marker = current_slot(host, instance)
    for prefix, _suffix in SLOTS:
        unit = f"{prefix}{instance}.service"
        state = unit_properties(host, unit, "ActiveState", "UnitFileState")
        expected = ("active", "enabled") if unit == current else ("inactive", "disabled")
        assert (state["ActiveState"], state["UnitFileState"]) == expected, unit


@pytest.mark.parametrize("instance", INSTANCES)
def test_main_pid_is_the_celery_worker_itself_from_its_release(host, instance: str) -> None:
    unit, _marker = current_slot(host, instance)
    suffix = slot_suffix(unit)
    pid = main_pid(host, unit)
    argv = host.file(f"/proc/{pid}/cmdline").content_string.split("\0")
    assert re.fullmatch(r"/opt/celery/releases/[0-9a-f]{16}/bin/python3?", argv[0]), argv
    assert re.fullmatch(r"/opt/celery/releases/[0-9a-f]{16}/bin/celery", argv[1]), argv
    assert argv[2:5] == ["-A", "reliable_celery_app", "worker"], argv
    assert f"--hostname={instance}{suffix}@%h" in argv
    assert f"--statedb=/var/lib/celery/worker-{instance}/worker{suffix}.state" in argv
    assert host.check_output(f"readlink -f /proc/{pid}/exe").startswith("/usr/bin/python3")


@pytest.mark.parametrize("instance", INSTANCES)
def test_readiness_marker_names_the_main_pid(host, instance: str) -> None:
    unit, marker_path = current_slot(host, instance)
    marker = host.file(marker_path)
    assert marker.exists, journal(host, unit)
    runtime_directory = host.file(marker_path.rsplit("/", 1)[0])
    assert (runtime_directory.user, runtime_directory.group, runtime_directory.mode) == ("celery", "celery", 0o750)
    hostname = host.check_output("hostname")
    assert f'"pid": {main_pid(host, unit)},' in marker.content_string
    assert f'"node": "{instance}{slot_suffix(unit)}@{hostname}"' in marker.content_string


@pytest.mark.parametrize("prefix", [prefix for prefix, _suffix in SLOTS])
def test_unit_scores_low_exposure(host, prefix: str) -> None:
    output = host.check_output(f"systemd-analyze security --no-pager {prefix}default.service")
    exposure = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output).group(1))
    print(f"systemd-analyze security {prefix}default.service: {exposure}")
    assert exposure <= 1.2, output


def test_service_user(host) -> None:
    user = host.user("celery")
    assert user.exists
    assert user.group == "celery"
    assert user.home == "/var/lib/celery"
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/etc/celery", "root", "root", 0o755),
        ("/etc/celery/worker.env", "root", "celery", 0o640),
        ("/etc/celery/worker-settings.json", "root", "celery", 0o640),
        ("/etc/celery/worker-instances", "root", "celery", 0o750),
        ("/etc/celery/worker-instances/default.env", "root", "celery", 0o640),
        ("/etc/celery/worker-instances/reports.env", "root", "celery", 0o640),
        ("/etc/systemd/system/celery-worker@.service", "root", "root", 0o644),
        ("/etc/systemd/system/celery-worker-b@.service", "root", "root", 0o644),
        ("/opt/celery/releases", "root", "root", 0o755),
        ("/var/lib/celery", "celery", "celery", 0o751),
        ("/var/lib/celery/worker-default", "celery", "celery", 0o750),
    ],
)
def test_owner_and_mode(host, path: str, owner: str, group: str, mode: int) -> None:
    file = host.file(path)
    assert file.exists
    assert (file.user, file.group, file.mode) == (owner, group, mode)


def test_release_is_owned_by_root_and_runs_the_pinned_celery(host) -> None:
    release = host.check_output("readlink -f /opt/celery/current")
    assert re.fullmatch(r"/opt/celery/releases/[0-9a-f]{16}", release)
    assert host.check_output(f"find {release} ! -user root -o -perm /022 ! -type l | head -5") == ""
    assert host.check_output(f"{release}/bin/celery --version").startswith("5.7.0 ")
    manifest = json.loads(host.file(f"{release}/.release.json").content_string)
    assert manifest["celery"] == "celery[redis]==5.7.0", manifest


def test_a_worker_killed_six_times_within_ten_seconds_starts_again(host) -> None:
    """As tasks that kill their worker can do: systemd's default start limit (5 starts in 10 s)
    would leave the unit failed for good."""
    unit, marker = current_slot(host, "reports")

    def started_after(killed: int) -> int:
        pid = main_pid(host, unit)
        return pid if pid not in (0, killed) else 0

    pid = main_pid(host, unit)
    for _kill in range(6):
        host.check_output(f"kill -KILL {pid}")
        pid = wait_for(functools.partial(started_after, pid), 30, "the worker's next main process")
    # The marker is gone while the unit is stopped (its runtime directory with it).
    wait_for(lambda: f'"pid": {main_pid(host, unit)},' in host.run(f"cat {marker}").stdout, 60, "the worker ready")
    assert unit_properties(host, unit, "ActiveState")["ActiveState"] == "active", journal(host, unit)


def test_a_ready_worker_that_is_killed_starts_again_at_once(host) -> None:
    """No pause for a worker that was ready: systemd starts it again within ms of its death (with the
    former RestartSec=1, 1.14 s; a pause by mistake would be celery_worker_restart_seconds, 1 s)."""
    unit, marker = current_slot(host, "reports")
    pid = main_pid(host, unit)
    wait_for(lambda: f'"pid": {pid},' in host.run(f"cat {marker}").stdout, 60, "the worker ready")
    since = host.check_output("date +%s")
    host.check_output(f"kill -KILL {pid}")
    wait_for(lambda: main_pid(host, unit) not in (0, pid), 30, "the worker's next main process")
    entries = [
        json.loads(line) for line in host.check_output(f"journalctl -u {unit} -o json --since @{since}").splitlines()
    ]
    died = next(int(e["__REALTIME_TIMESTAMP"]) for e in entries if "Main process exited" in str(e.get("MESSAGE")))
    started = next(
        int(e["__REALTIME_TIMESTAMP"])
        for e in entries
        if str(e.get("MESSAGE")).startswith("Started") and int(e["__REALTIME_TIMESTAMP"]) > died
    )
    assert (started - died) / 1e6 < 1.0, journal(host, unit)


def test_a_frozen_worker_is_aborted_by_the_watchdog_and_starts_again(host) -> None:
    """SIGSTOP of the main process: no WATCHDOG=1 comes, and systemd aborts the worker once
    celery_worker_watchdog_seconds (20 s) have passed since the last one, then starts it again."""
    times = hang_until_replaced(host, "reports", "freeze-main")
    seconds = times["aborted"] - times["hung"]
    record_figures("REPORT", f"watchdog: a frozen worker was aborted {seconds:.1f} s after SIGSTOP")
    # The last WATCHDOG=1 came at most a quarter of the timeout before the freeze; the bound is 30 s.
    assert 20 - 20 / 4 - 1 <= seconds <= 30, (seconds, journal(host, current_slot(host, "reports")[0]))


def test_a_worker_that_cannot_start_pauses_before_each_restart(host) -> None:
    """The restart pause (celery_worker_restart_seconds, 1 s) applies to a worker that ended before
    it was ready: with RestartSec=0 alone, this slot restarted 155 times in 5 s."""
    current, _marker = current_slot(host, "reports")
    (other,) = (f"{prefix}reports.service" for prefix, _suffix in SLOTS if f"{prefix}reports.service" != current)
    drop_ins = f"/run/systemd/system/{other}.d"
    drop_in = f"{drop_ins}/cannot-start.conf"
    host.check_output(
        f"mkdir -p {drop_ins} && printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' > {drop_in}"
        " && systemctl daemon-reload"
    )
    try:
        host.check_output(f"systemctl start {other}")
        time.sleep(5)
        restarts = int(unit_properties(host, other, "NRestarts")["NRestarts"])
    finally:
        host.run(f"systemctl stop {other}; rm {drop_in}; rmdir {drop_ins}; systemctl daemon-reload")
        host.run(f"systemctl reset-failed {other}")
    assert 2 <= restarts <= 8, journal(host, other)
    assert unit_properties(host, other, "ActiveState")["ActiveState"] == "inactive"
