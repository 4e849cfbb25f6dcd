from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.release import redact_urls, release_prune, wheel_mismatches

RELEASES = "/opt/celery/releases"


def path(name: str) -> str:
    return f"{RELEASES}/{name}"


def marker(name: str, mtime: float) -> dict:
    return {"path": f"{path(name)}/.release.json", "mtime": mtime}


def test_a_partial_release_never_displaces_the_last_complete_one() -> None:
    """The issue's case: a failed build (no marker, newest directory) was kept, the rollback release pruned."""
    directories = [path("good-old"), path("good-prev"), path("partial"), path("current")]
    markers = [marker("good-old", 100), marker("good-prev", 200), marker("current", 300)]
    pruned = release_prune(directories, markers, [], path("current"), 2)
    assert pruned == [path("good-old"), path("partial")]


def test_newest_completed_releases_are_kept_whatever_the_directory_order() -> None:
    directories = [path(name) for name in "abcde"]
    markers = [marker("a", 50), marker("b", 400), marker("c", 100), marker("d", 300), marker("e", 500)]
    assert release_prune(directories, markers, [], path("e"), 3) == [path("a"), path("c")]


def test_running_releases_are_kept_beyond_the_count_even_incomplete() -> None:
    directories = [path("old"), path("draining"), path("current"), path("odd")]
    markers = [marker("old", 1), marker("draining", 2), marker("current", 3)]
    processes = [
        f"{path('draining')}/bin/python {path('draining')}/bin/celery -A reliable_celery_app worker",
        f"/bin/sh -c {path('odd')}/bin/thing",
        "/opt/celery-beat/releases/zzz/bin/python celery beat",
    ]
    assert release_prune(directories, markers, processes, path("current"), 1) == [path("old")]


def test_keep_one_keeps_only_the_current_release() -> None:
    directories = [path("a"), path("b")]
    assert release_prune(directories, [marker("a", 1), marker("b", 2)], [], path("b"), 1) == [path("a")]


@pytest.mark.parametrize("keep", [0, -1, "2", None])
def test_keep_must_be_a_positive_integer(keep: object) -> None:
    with pytest.raises(AnsibleFilterError, match="releases to keep"):
        release_prune([], [], [], path("a"), keep)


@pytest.mark.parametrize(
    "wheel",
    [
        "celery-5.7.0-py3-none-any.whl",
        "six-1.16.0-py2.py3-none-any.whl",
        "msgpack-1.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl",
        "tomli-2.0.1-py311-none-any.whl",
        "pkg-1.0-1build-py3-none-linux_x86_64.whl",
        "reliable_celery_example-2.0.0.tar.gz",
    ],
)
def test_wheels_for_the_hosts_python_fit(wheel: str) -> None:
    assert wheel_mismatches([f"wheelhouse/{wheel}"], "3.11.2", "x86_64") == []


@pytest.mark.parametrize(
    "wheel",
    [
        "pydantic_core-2.27.2-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "msgpack-1.1.0-cp311-cp311-manylinux_2_17_aarch64.whl",
        "msgpack-1.1.0-cp311-cp311-macosx_11_0_arm64.whl",
        "msgpack-1.1.0-cp311-cp311-musllinux_1_1_x86_64.whl",
        "cryptography-44.0.0-cp312-abi3-manylinux_2_28_x86_64.whl",
        "somepkg-1.0-py312-none-any.whl",
        "legacy-1.0-py2-none-any.whl",
        "gevent-24.11.1-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl",
        "not-a-wheel-name.whl",
    ],
)
def test_wheels_for_another_python_abi_or_platform_are_named(wheel: str) -> None:
    assert wheel_mismatches(["celery-5.7.0-py3-none-any.whl", wheel], "3.11.2", "x86_64") == [wheel]


def test_a_python_version_that_is_not_cpython_3_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="CPython 3 version"):
        wheel_mismatches([], "2.7", "x86_64")


def test_credentials_in_urls_are_masked_and_the_rest_kept() -> None:
    text = (
        "ERROR: Could not find a version (from https://ci:Index-Token-4e1b@pkgs.example.com/simple/app/)\n"
        "Looking in indexes: https://__token__@pypi.example.com/simple, https://pypi.org/simple"
    )
    assert redact_urls(text) == (
        "ERROR: Could not find a version (from https://****@pkgs.example.com/simple/app/)\n"
        "Looking in indexes: https://****@pypi.example.com/simple, https://pypi.org/simple"
    )
