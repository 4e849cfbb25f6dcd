"""site.yml and restart.yml from an infra repo with its own group names, and runs that match no
host; the roles on a host whose service account and directories an operator made."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import (
    REDIS_SERVER,
    current_unit,
    fingerprint,
    main_pid,
    recap,
    run_playbook,
    scenario_host,
)
from test_site import BEAT, BROKER, SITE_PATHS, WORKER1, WORKER2

PLAYBOOKS = Path(__file__).parents[3] / "playbooks"
EXAMPLE_GROUP_VARS = Path(__file__).parents[3] / "examples" / "inventory" / "group_vars"
WORKER_INSTANCES = [(WORKER1, "default"), (WORKER2, "default"), (WORKER2, "reports")]
# The infra repo's name for each of the example inventory's groups.
INFRA_GROUPS = {"broker": "message_bus", "workers": "app_servers", "beat": "scheduler", "flower": "monitoring"}


@pytest.fixture(scope="module")
def fleet() -> dict:
    return {name: scenario_host(name) for name in (BROKER, WORKER1, WORKER2, BEAT)}


def worker_pids(fleet) -> dict[tuple[str, str], int]:
    return {
        (name, instance): main_pid(fleet[name], current_unit(fleet[name], instance))
        for name, instance in WORKER_INSTANCES
    }


def output_of(result: subprocess.CompletedProcess) -> str:
    """The run's output with Ansible's line folding undone."""
    return " ".join((result.stdout + result.stderr).split())


def write_inventory(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def infra_repo_inventory(directory: Path) -> Path:
    """The scenario's fleet as an infra repo lists it: its own group names, the example's
    group_vars under them, and the group variables of the playbooks in group_vars/all."""
    # The scenario's host_vars too: the suite's broker.
    host_vars = {"ansible_connection": "community.docker.docker", "celery_broker_type": REDIS_SERVER}
    members = {"broker": [BROKER], "workers": [WORKER1, WORKER2], "beat": [BEAT], "flower": [BROKER]}
    children = {INFRA_GROUPS[group]: {"hosts": dict.fromkeys(hosts, host_vars)} for group, hosts in members.items()}
    # group_vars/workers.yml gives the hosts of report_workers a second instance.
    children["report_workers"] = {"hosts": {WORKER2: host_vars}}
    group_vars = directory / "group_vars"
    group_vars.mkdir()
    for group, infra_group in INFRA_GROUPS.items():
        (group_vars / f"{infra_group}.yml").write_text((EXAMPLE_GROUP_VARS / f"{group}.yml").read_text())
    common = (EXAMPLE_GROUP_VARS / "all.yml").read_text().replace("groups['broker']", "groups['message_bus']")
    assert "groups['message_bus']" in common, (
        "examples/inventory/group_vars/all.yml no longer finds the broker this way"
    )
    playbook_groups = "".join(
        f"celery_site_{group}_group: {infra_group}\n" for group, infra_group in INFRA_GROUPS.items()
    )
    (group_vars / "all.yml").write_text(common + "\n" + playbook_groups)
    return write_inventory(directory / "hosts.yml", {"all": {"children": children}})


def run_with_inventory(playbook: Path, inventory: Path, *options: str) -> subprocess.CompletedProcess:
    """ansible-playbook with INVENTORY alone (run_playbook adds the scenario's own)."""
    command = ["ansible-playbook", "-i", str(inventory), str(playbook), *options]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=1200)


def test_site_playbook_deploys_an_inventory_with_other_group_names(fleet, tmp_path: Path) -> None:
    """The deployed fleet, listed under the infra repo's group names only: every host gets its
    roles again (ok, nothing to change), none is left out."""
    result = run_with_inventory(PLAYBOOKS / "site.yml", infra_repo_inventory(tmp_path))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    for name in fleet:
        counts = recap(result, name)
        assert counts["changed"] == 0, (name, counts)
        # The first play alone gives a host 1 ok; each role gives dozens.
        assert counts["ok"] > 10, (name, counts, "the host's role did not run")
    for play in ("Broker", "Workers", "Beat", "Flower"):
        play_output = re.search(rf"^PLAY \[{play}\] \**\n(.*?)(?=^PLAY |\Z)", result.stdout, re.MULTILINE | re.DOTALL)
        assert play_output, f"no play {play}"
        assert "skipping: no hosts matched" not in play_output.group(1), f"the play {play} ran on no host"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"celery_site_workers_group": "app_servers"}, "celery_site_workers_group is 'app_servers', and no host"),
        ({"celery_site_broker_group": "message_bus"}, "celery_site_broker_group is 'message_bus', and no host"),
        # Optional parts are required once their variable names a group.
        ({"celery_site_flower_group": "monitoring"}, "celery_site_flower_group is 'monitoring', and no host"),
        # Several broker hosts form one broker of one type (a RabbitMQ cluster, Redis with Sentinel): a mixture
        # cannot be served.
        (
            {
                "celery_site_broker_group": "broker:workers",
                "celery_broker_type": "{{ 'rabbitmq' if inventory_hostname in groups['workers'] else 'redis' }}",
            },
            "broker:workers has 3 hosts with celery_broker_type rabbitmq, redis",
        ),
    ],
)
def test_site_playbook_fails_before_any_change_when_a_required_group_has_no_host(
    fleet, variables: dict, message: str
) -> None:
    before = {name: fingerprint(host, SITE_PATHS) for name, host in fleet.items()}
    result = run_playbook(PLAYBOOKS / "site.yml", extra_vars=variables)
    assert result.returncode != 0, result.stdout[-3000:]
    assert message in output_of(result), output_of(result)[-3000:]
    assert "PLAY [Broker]" not in result.stdout, "the run went on after the refusal"
    assert {name: fingerprint(host, SITE_PATHS) for name, host in fleet.items()} == before


def test_restart_playbook_restarts_the_workers_of_the_group_the_inventory_names(fleet, tmp_path: Path) -> None:
    """An infra repo whose worker group (here: only worker2) is named in its inventory's group_vars."""
    extra = write_inventory(
        tmp_path / "infra.yml",
        {
            "all": {
                "vars": {"celery_site_workers_group": "app_servers"},
                "children": {"app_servers": {"hosts": {WORKER2: {}}}},
            }
        },
    )
    before = worker_pids(fleet)
    result = run_playbook(PLAYBOOKS / "restart.yml", "-i", str(extra))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    after = worker_pids(fleet)
    restarted = {key for key in before if after[key] != before[key]}
    assert restarted == {(WORKER2, "default"), (WORKER2, "reports")}, (before, after)
    assert all(pid > 0 for pid in after.values()), after


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-e", "celery_site_workers_group=app_servers"], "celery_site_workers_group is 'app_servers', and no host"),
        (["-e", "celery_restart_hosts=rc-site-worker9"], "celery_restart_hosts is 'rc-site-worker9', and no host"),
        (["--limit", BEAT], "celery_site_workers_group is 'workers', and no host of this run"),
    ],
    ids=["unknown group", "pattern matching no host", "limit without a worker"],
)
def test_restart_playbook_that_would_restart_no_worker_fails(fleet, options: list[str], message: str) -> None:
    before = worker_pids(fleet)
    result = run_playbook(PLAYBOOKS / "restart.yml", *options)
    assert result.returncode != 0, result.stdout[-3000:]
    assert message in output_of(result), output_of(result)[-3000:]
    assert worker_pids(fleet) == before


# The beat host's account and directories, as an operator might have changed them.
ACCOUNT = "getent passwd celery; getent shadow celery; getent group celery"
DIRECTORIES = "stat -c '%n %U:%G %a' /etc/celery /var/lib/celery"


def test_an_existing_system_account_and_directories_are_used_unchanged(fleet) -> None:
    """An existing system account without a login shell runs beat as it is: no shell, password,
    comment, group or home rewritten; directories the run did not create keep owner and mode."""
    beat = fleet[BEAT]
    original = beat.check_output(DIRECTORIES)
    beat.check_output("usermod --shell /bin/false --comment 'made by ops' --password '*' celery")
    beat.check_output("chown root:celery /etc/celery && chmod 0710 /etc/celery && chmod 0700 /var/lib/celery")
    try:
        account, directories = beat.check_output(ACCOUNT), beat.check_output(DIRECTORIES)
        result = run_playbook(PLAYBOOKS / "site.yml", "--limit", BEAT)
        assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
        assert recap(result, BEAT)["changed"] == 0, result.stdout[-5000:]
        assert beat.check_output(ACCOUNT) == account
        assert beat.check_output(DIRECTORIES) == directories
        assert beat.run("systemctl is-active celery-beat.service").stdout.strip() == "active"
    finally:
        beat.check_output("usermod --shell /usr/sbin/nologin --comment '' --password '!' celery")
        for line in original.splitlines():
            path, owner, mode = line.split()
            beat.check_output(f"chown {shlex.quote(owner)} {path} && chmod {mode} {path}")
