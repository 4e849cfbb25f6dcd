from __future__ import annotations

from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.service_input_problems import service_input_problems

SERVICE = {
    "variable_prefix": "celery_worker",
    "requirements_file": "",
    "wheelhouse": "",
    "installer": "pip",
    "releases_to_keep": 3,
    "python": "/usr/bin/python3",
    "user": "celery",
    "group": "celery",
    "install_dir": "/opt/celery",
    "home": "/var/lib/celery",
    "config_dir": "/etc/celery",
    "units": [{"read_write_paths": ["/srv/data"]}, {"read_write_paths": ["/srv/data"]}],
    "app_path": "",
}


def problems(**service: object) -> list[str]:
    return service_input_problems({**SERVICE, **service}, "0.13.9")


def test_a_valid_description_has_no_problem(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("celery\n")
    assert problems() == []
    assert problems(requirements_file=str(requirements), wheelhouse=str(tmp_path), app_path="/srv/app/v1") == []


@pytest.mark.parametrize(
    "wrong",
    [
        {"requirements_file": "/nonexistent/requirements.txt"},
        {"wheelhouse": "/nonexistent/wheels"},
        {"releases_to_keep": 0},
        {"python": "python3"},
        {"user": "Celery Admin"},
        {"group": "1celery"},
    ],
    ids=["requirements file", "wheelhouse", "releases to keep", "python", "user", "group"],
)
def test_each_wrong_install_input_gets_the_install_inputs_message(wrong: dict) -> None:
    found = problems(**wrong)
    assert len(found) == 1
    assert found[0].startswith("celery_worker: the requirements file must be a file and the wheelhouse a directory")
    assert "celery_worker_releases_to_keep must be >= 1" in found[0]


def test_uv_with_a_wheelhouse_needs_the_pinned_uv_wheel_there(tmp_path: Path) -> None:
    (tmp_path / "uv-0.13.8-py3-none-manylinux_2_17_x86_64.whl").write_text("")
    assert problems(installer="uv", wheelhouse=str(tmp_path)) == [
        f"celery_worker_installer uv is installed from the wheelhouse {tmp_path}, which has no wheel of uv 0.13.9:"
        " add uv==0.13.9 to it (wheelhouse_requirements of the playbook reliable.celery.wheelhouse) or set"
        " celery_worker_installer to pip."
    ]
    (tmp_path / "uv-0.13.9-py3-none-manylinux_2_17_x86_64.whl").write_text("")
    assert problems(installer="uv", wheelhouse=str(tmp_path)) == []
    assert problems(installer="uv") == [], "without a wheelhouse uv comes from the index"


def test_each_path_variable_with_a_system_directory_gets_its_own_message() -> None:
    found = problems(
        home="/var/lib", units=[{"read_write_paths": ["/srv/ok", "/proc/x", "/proc/x"]}], app_path="/usr/local"
    )
    assert [message.split(" ", 1)[0] for message in found] == [
        "celery_worker_home",
        "celery_worker_read_write_paths",
        "celery_worker_app_path",
    ]
    assert found[0].startswith("celery_worker_home must be an absolute, normalised path at least two levels deep")
    assert found[0].endswith("which the units hide or which keep no files; refused: /var/lib.")
    assert found[1].endswith("refused: /proc/x."), "a path two units share is named once"


def test_another_value_than_a_service_description_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="not a service description"):
        service_input_problems({"variable_prefix": "celery_worker"}, "0.13.9")
