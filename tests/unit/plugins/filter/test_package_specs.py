from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.reliable.celery.plugins.filter.celery_requirement import celery_requirement, package_specs

TOKEN = "Index-Token-4e1b"  # noqa: S105 - looked for in error messages, where it must not be


@pytest.mark.parametrize(
    "spec",
    [
        "reliable-celery-example==2.0.0",
        "/usr/local/src/reliable-celery-example",
        f"app @ https://ci:{TOKEN}@pkgs.example.com/app-1.0-py3-none-any.whl",
        'tomli==2.0.1; python_version < "3.11"',
        "flower[extra]>=2.0,<3",
    ],
)
def test_package_specifiers_pass_unchanged(spec: str) -> None:
    assert package_specs([spec], "celery_worker_app_packages") == [spec]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("--index-url=https://evil.example/simple", "starts with '-'"),
        ("-r/etc/shadow", "starts with '-'"),
        (" -e git+https://x/y", "starts with '-'"),
        (f"app==1.0\n--extra-index-url https://ci:{TOKEN}@x/simple", "one line"),
        ("app==1.0 --hash=sha256:00", "option or a comment"),
        ("app==1.0 # pinned", "option or a comment"),
        ("app==1.0 \\", "backslash"),
        ("app @ https://${TOKEN}@x/app.whl", "environment variables"),
        ("", "non-empty"),
        ("   ", "non-empty"),
    ],
)
def test_what_pip_would_read_as_an_option_is_refused_naming_the_variable_and_index(spec: str, problem: str) -> None:
    with pytest.raises(AnsibleFilterError, match=r"celery_worker_app_packages\[1\]") as error:
        package_specs(["app==1.0", spec], "celery_worker_app_packages")
    assert problem in str(error.value)
    assert TOKEN not in str(error.value), "a refused specifier's token reached the message"


@pytest.mark.parametrize("value", [None, 3, ["app", None], "app==1.0"])
def test_not_a_list_of_strings_is_refused(value: object) -> None:
    with pytest.raises(AnsibleFilterError, match="celery_beat_app_packages"):
        package_specs(value, "celery_beat_app_packages")


def test_latest_is_refused_with_why() -> None:
    with pytest.raises(AnsibleFilterError, match="not latest or a range") as error:
        celery_requirement("latest", variable="celery_flower_celery_version")
    assert "celery_flower_celery_version must be an exact version such as 5.7.0, got 'latest'" in str(error.value)
