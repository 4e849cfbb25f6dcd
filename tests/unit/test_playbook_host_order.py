"""site.yml and restart.yml roll hosts in inventory order, whatever order their first play's
results arrive in: the group their rolling plays run on is filled in inventory order."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).parents[2]
HOSTS = ("worker1", "worker2", "worker3", "worker4")


def rolled_hosts(tmp_path: Path, playbook: str, group_variable: str, group: str) -> list[str]:
    """Run the playbook's first play (the one that fills GROUP) on local hosts, the first of which
    is slow to evaluate GROUP_VARIABLE, then list GROUP's hosts one per batch, as the rolls do."""
    first_play = yaml.safe_load((REPO_ROOT / "playbooks" / playbook).read_text())[0]
    probe = {
        "name": "Roll",
        "hosts": group,
        "gather_facts": False,
        "serial": 1,
        "tasks": [{"ansible.builtin.debug": {"msg": "rolled {{ inventory_hostname }}"}}],
    }
    (tmp_path / "play.yml").write_text(yaml.safe_dump([first_play, probe], sort_keys=False))
    slow = "{{ lookup('ansible.builtin.pipe', 'sleep 2') }}workers"
    inventory = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "children": {
                "workers": {
                    "hosts": {host: {group_variable: slow} if index == 0 else {} for index, host in enumerate(HOSTS)}
                },
                "broker": {"hosts": {"broker1": {}}},
            },
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    playbook_command = shutil.which("ansible-playbook") or "ansible-playbook"
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [playbook_command, "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml")],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line.split("rolled ", 1)[1].strip('" ') for line in result.stdout.splitlines() if '"msg": "rolled ' in line]


@pytest.mark.parametrize(
    ("playbook", "group_variable", "group"),
    [
        ("restart.yml", "celery_restart_hosts", "reliable_celery_restart_workers"),
        ("site.yml", "celery_site_workers_group", "reliable_celery_site_workers"),
    ],
)
def test_workers_roll_in_inventory_order(tmp_path: Path, playbook: str, group_variable: str, group: str) -> None:
    assert rolled_hosts(tmp_path, playbook, group_variable, group) == list(HOSTS)
