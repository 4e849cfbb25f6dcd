"""The defaults-vs-argument_specs check really catches drift between the two files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).parents[3] / "scripts" / "check_argument_specs.py"
spec = importlib.util.spec_from_file_location("check_argument_specs", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def make_role(roles: Path, defaults: dict, options: dict, entry_point: str = "main") -> Path:
    role = roles / "demo_role"
    (role / "defaults").mkdir(parents=True)
    (role / "meta").mkdir()
    (role / "defaults" / "main.yml").write_text(yaml.safe_dump(defaults))
    specs = {"argument_specs": {entry_point: {"options": options}}}
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(specs))
    return role


def option(description: str = "What it is for.", **extra: object) -> dict:
    return {"type": "str", "description": description, **extra}


def test_matching_defaults_and_specs_pass(tmp_path: Path) -> None:
    make_role(
        tmp_path,
        defaults={"demo_user": "celery", "__demo_private": 1},
        options={"demo_user": option(default="celery"), "demo_app": option(required=True)},
    )
    assert check.main(tmp_path) == 0


@pytest.mark.parametrize(
    ("defaults", "options", "problem"),
    [
        (
            {"demo_user": "x", "demo_extra": 1},
            {"demo_user": option(default="x")},
            "default `demo_extra` is not documented",
        ),
        ({}, {"demo_user": option()}, "option `demo_user` is neither required nor defaulted"),
        ({"demo_user": "x"}, {"demo_user": option(required=True)}, "`demo_user` is required but also has a default"),
        (
            {"demo_user": "x"},
            {"demo_user": option(default="x", description="")},
            "option `demo_user` has no description",
        ),
        ({"demo_user": "x"}, {"demo_user": option(default="y")}, "documents default 'y' but defaults/main.yml has 'x'"),
        ({"demo_user": "x"}, {"demo_user": option()}, "documents default None but defaults/main.yml has 'x'"),
    ],
)
def test_drift_is_reported(tmp_path: Path, capsys, defaults: dict, options: dict, problem: str) -> None:
    make_role(tmp_path, defaults, options)
    assert check.main(tmp_path) == 1
    assert problem in capsys.readouterr().err


def test_a_role_without_a_main_entry_point_is_reported(tmp_path: Path, capsys) -> None:
    make_role(tmp_path, {}, {}, entry_point="other")
    assert check.main(tmp_path) == 1
    assert "has no `main` entry point" in capsys.readouterr().err


def test_no_roles_directory_checks_nothing_and_passes(tmp_path: Path) -> None:
    assert check.main(tmp_path / "roles") == 0
