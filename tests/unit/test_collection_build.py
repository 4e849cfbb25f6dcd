"""The built collection holds what a user of the installed collection needs, and nothing that
only develops or tests it (galaxy.yml build_ignore)."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[2]
TOP_LEVEL = {
    "FILES.json",
    "MANIFEST.json",
    "LICENSE",
    "README.md",
    "changelogs",
    "docs",
    "examples",
    "meta",
    "playbooks",
    "plugins",
    "roles",
    "tests",
}
DEVELOPMENT_ONLY = (
    "benchmarks/",
    "scripts/",
    "molecule/",
    "tests/unit/",
    ".cache/",
    ".ci/",
    ".config/",
    "playbooks/collections",
    "examples/demo-",
    "requirements-",
    "Makefile",
    "pyproject.toml",
)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    output = tmp_path_factory.mktemp("build")
    galaxy = shutil.which("ansible-galaxy")
    assert galaxy, "ansible-galaxy is not on PATH"
    subprocess.run(  # noqa: S603 - a fixed command line
        [galaxy, "collection", "build", "--output-path", str(output), str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    (tarball,) = output.glob("reliable-celery-*.tar.gz")
    with tarfile.open(tarball) as archive:
        return [member.name for member in archive.getmembers() if member.isfile()]


def test_only_what_an_installed_collection_needs_is_at_the_top(members: list[str]) -> None:
    assert {name.split("/", 1)[0] for name in members} == TOP_LEVEL


def test_no_development_only_file_is_in_the_tarball(members: list[str]) -> None:
    leaked = [name for name in members if name.startswith(DEVELOPMENT_ONLY) or "__pycache__" in name]
    assert leaked == []


def test_tests_hold_only_the_sanity_ignore_files(members: list[str]) -> None:
    assert {name for name in members if name.startswith("tests/")} == {
        f"tests/sanity/{path.name}" for path in (REPO_ROOT / "tests" / "sanity").iterdir()
    }


def test_the_playbooks_and_every_role_are_shipped(members: list[str]) -> None:
    playbooks = {name for name in members if name.startswith("playbooks/")}
    assert playbooks == {f"playbooks/{path.name}" for path in (REPO_ROOT / "playbooks").glob("*.yml")}
    for role in (REPO_ROOT / "roles").iterdir():
        assert f"roles/{role.name}/meta/argument_specs.yml" in members
