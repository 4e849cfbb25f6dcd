# ruff: noqa: S108 - temporary directories are among the refused inputs
from __future__ import annotations

import pytest
from ansible_collections.reliable.celery.plugins.test.service_directory import service_directory


@pytest.mark.parametrize(
    "value",
    [
        "/opt/celery",
        "/var/lib/celery",
        "/etc/celery",
        "/srv/app/celery",
        "/usr/local/celery",
        "/run/app",
        "/opt/a-b_c.d",
    ],
)
def test_service_directories(value: str) -> None:
    assert service_directory(value)


@pytest.mark.parametrize(
    "value",
    [
        # system directories: the root, top-level ones, shared ones below them
        "/", "/etc", "/var", "/usr", "/home", "/run", "/tmp", "/opt", "/srv",
        "/var/lib", "/var/log", "/usr/local", "/usr/lib", "/usr/local/bin", "/etc/systemd", "/etc/ssl", "/run/systemd",
        # inside trees the units hide or that keep no files
        "/home/deploy", "/root/celery", "/tmp/celery", "/var/tmp/celery", "/proc/1", "/sys/fs/x", "/dev/shm/x",
        "/run/user/0/x", "/boot/celery",
        # not absolute or not normalised: what a reader sees is not what the host resolves
        "opt/celery", "/opt/celery/", "//opt/celery", "/opt//celery", "/opt/./celery", "/opt/celery/../../etc",
        "", None, 7,
    ],
)  # fmt: skip
def test_not_service_directories(value: object) -> None:
    assert not service_directory(value)
