from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.release import (
    redact_urls,
    release_install_commands,
    release_prune,
    release_uv_dir,
    wheel_mismatches,
)

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


RELEASE = "/opt/celery/releases/0f1e2d3c4b5a6978"
BUILD = "/opt/celery/.build-0f1e2d3c4b5a6978"


def commands(installer: str, wheelhouse: str = "") -> dict:
    build = {
        "python": "/usr/bin/python3",
        "install_dir": "/opt/celery",
        "release_dir": RELEASE,
        "build_dir": BUILD,
        "wheelhouse": wheelhouse,
    }
    return release_install_commands(installer, build, "0.13.9", "celery_worker_installer")


def test_pip_builds_in_a_stdlib_virtualenv_with_nothing_to_install_first() -> None:
    assert commands("pip") == {
        "installer": [],
        "venv": ["/usr/bin/python3", "-m", "venv", RELEASE],
        "install": [
            f"{RELEASE}/bin/pip",
            "install",
            "--no-input",
            "--disable-pip-version-check",
            "-r",
            f"{BUILD}/install.txt",
        ],
        "leftovers": [],
    }


def test_uv_is_installed_once_per_version_beside_the_releases_and_builds_with_the_hosts_python() -> None:
    built = commands("uv")
    uv = "/opt/celery/installers/uv-0.13.9/bin/uv"
    assert [step["creates"] for step in built["installer"]] == ["/opt/celery/installers/uv-0.13.9/bin/python", uv]
    assert built["installer"][1]["argv"][-1] == "uv==0.13.9"
    assert built["venv"] == [uv, "venv", "--quiet", "--no-python-downloads", "--python", "/usr/bin/python3", RELEASE]
    install = built["install"]
    assert install[:3] == [uv, "pip", "install"]
    assert install[install.index("--python") + 1] == f"{RELEASE}/bin/python"
    # Bytecode as pip writes it (the service user cannot write it), the system's CAs, files of the release's own.
    assert {"--compile-bytecode", "--system-certs"} <= set(install)
    assert install[install.index("--link-mode") + 1] == "copy"
    assert install[-2:] == ["-r", f"{BUILD}/install.txt"]
    # uv's world-writable lock file and its marks of a cache directory (which backup tools skip).
    assert built["leftovers"] == [f"{RELEASE}/.lock", f"{RELEASE}/CACHEDIR.TAG", f"{RELEASE}/.gitignore"]


def test_uv_is_installed_in_its_directory_of_the_version() -> None:
    assert release_uv_dir("/opt/celery", "0.13.9") == "/opt/celery/installers/uv-0.13.9"
    assert commands("uv")["venv"][0] == release_uv_dir("/opt/celery", "0.13.9") + "/bin/uv"


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_a_wheelhouse_is_the_only_source_of_the_release_and_of_uv(installer: str) -> None:
    built = commands(installer, wheelhouse="/srv/wheelhouse")
    offline = ["--no-index", "--find-links", f"{BUILD}/wheelhouse"]
    for argv in [built["install"]] + [step["argv"] for step in built["installer"] if "pip" in step["argv"][0]]:
        assert any(argv[i : i + 3] == offline for i in range(len(argv))), argv


def test_an_unknown_installer_is_refused_naming_the_variable_and_the_choices() -> None:
    with pytest.raises(AnsibleFilterError, match="celery_worker_installer must be one of pip, uv, got 'conda'"):
        commands("conda")


def test_uvs_manylinux_wheel_fits_the_hosts() -> None:
    wheel = "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert wheel_mismatches([f"/w/{wheel}"], "3.11.2", "x86_64") == []
