# Copyright: reliable.celery maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service_directory test: a directory a Celery service may have for itself."""

from __future__ import annotations

import posixpath

# Directories the system and its packages share, below the top level (every top-level directory
# is refused). A role that took one of them would write into it, and its service would get it.
_SHARED = """
    /etc/alternatives /etc/apt /etc/cron.d /etc/default /etc/init.d /etc/logrotate.d /etc/network /etc/pam.d
    /etc/profile.d /etc/rabbitmq /etc/redis /etc/security /etc/ssh /etc/ssl /etc/sudoers.d /etc/sysctl.d /etc/systemd
    /etc/valkey
    /run/lock /run/systemd
    /usr/bin /usr/games /usr/include /usr/lib /usr/lib32 /usr/lib64 /usr/libexec /usr/libx32 /usr/local /usr/sbin
    /usr/share /usr/src
    /usr/local/bin /usr/local/etc /usr/local/games /usr/local/include /usr/local/lib /usr/local/man /usr/local/sbin
    /usr/local/share /usr/local/src
    /var/backups /var/cache /var/lib /var/local /var/lock /var/log /var/mail /var/opt /var/run /var/spool /var/www
"""
SHARED_DIRECTORIES = frozenset(_SHARED.split())
# Directories whose content the services cannot see or keep: virtual file systems, the boot
# partition, what the units hide (ProtectHome=, PrivateTmp=) and what anyone may write to.
UNUSABLE_TREES = ("/boot", "/dev", "/home", "/proc", "/root", "/run/user", "/sys", "/tmp", "/var/tmp")  # noqa: S108 - refused


def service_directory(value):
    """Whether VALUE is an absolute, normalised path at least two levels deep (``/opt/celery``),
    neither a directory the system shares (``/var/lib``, ``/usr/local``, ``/etc/systemd``) nor
    inside one the services cannot use (``/proc``, ``/tmp``, ``/home``, ...)."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return False
    if posixpath.normpath(value) != value or value.count("/") < 2:
        return False
    if value in SHARED_DIRECTORIES:
        return False
    return not any(value == tree or value.startswith(tree + "/") for tree in UNUSABLE_TREES)


class TestModule:
    def tests(self):
        return {"service_directory": service_directory}
